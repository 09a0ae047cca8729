package distroproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/ddinit/ddinit/engineclient"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Follower keeps the binds in step with the engine's containers, over
// connections of its own to the engine.
type Follower struct {
	Binds  *Binds
	Engine *engineclient.Client
	Log    logrus.FieldLogger
}

// boundPaths is a container's label: engine path → source sent.
func boundPaths(label string) map[string]string {
	var m map[string]string
	// A label not made by a proxy (or none) names no bind: nil is right.
	json.Unmarshal([]byte(label), &m)
	return m
}

// distroPath is the path in this distro a label's source names: the
// distro's own absolute path, or a \\wsl$\<this distro>\… path sent from
// Windows; ok false for anything else (another distro's, a drive's).
func (b *Binds) distroPath(src string) (string, bool) {
	if distro, path, ok := parseWSLPath(src); ok {
		return path, strings.EqualFold(distro, b.Distro)
	}
	return src, filepath.IsAbs(src)
}

// labelled is the distro path a label's source for the bind key names,
// cleaned; ok false when the label is not to be trusted (not this
// distro's path, or not the source of that bind id).
func (b *Binds) labelled(key, src string) (string, bool) {
	path, ok := b.distroPath(src)
	if !ok {
		return "", false
	}
	path = filepath.Clean(path)
	return path, id(path) == key
}

// Recover makes again the binds this distro's containers need (after WSL
// restarted, the shared tmpfs is empty; after the proxy restarted, it does
// not know them), takes down those no container needs any more (Resync:
// the ones this process made, and those its earlier runs left), and then
// starts the containers whose start failed for want of them: those the
// engine would have restarted by their restart policy. A label whose bind
// id does not match its source is not trusted. It runs whenever the
// engine's events open: at the proxy's start and each time the engine
// comes back (the first list of containers may come only then: the proxy
// may start before the engine).
func (f *Follower) Recover(ctx context.Context) error {
	filters := url.QueryEscape(`{"label":["` + LabelBinds + `"]}`)
	var list []struct {
		ID     string            `json:"Id"`
		Labels map[string]string `json:"Labels"`
	}
	if err := f.Engine.Get(ctx, "/containers/json?all=1&filters="+filters, &list); err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	users, sources := map[string][]string{}, map[string]string{}
	defer func() { f.Binds.Resync(users, sources) }()
	for _, c := range list {
		log := f.Log.WithField("container", engineclient.ShortID(c.ID))
		var paths []string
		complete := true
		for dst, src := range boundPaths(c.Labels[LabelBinds]) {
			key := f.Binds.ownID(dst)
			if key == "" {
				continue // another distro's, or a drive's
			}
			path, ok := f.Binds.labelled(key, src)
			if !ok {
				log.WithFields(logrus.Fields{"bind": dst, "source": src}).Warn("a container's label does not match its bind: not made again")
				complete = false
				continue
			}
			// The container needs the bind even if it cannot be made
			// again: one that is up (an earlier run's) stays.
			users[key] = append(users[key], c.ID)
			sources[key] = path
			if _, err := f.Binds.remake(path); err != nil {
				log.WithError(err).Warn("a bind cannot be made again")
				complete = false
				continue
			}
			paths = append(paths, dst)
		}
		if len(paths) == 0 {
			continue
		}
		f.Binds.Use(c.ID, paths)
		if !complete {
			continue // started without all its binds, it would see empty folders
		}
		var state struct {
			State struct {
				Running bool   `json:"Running"`
				Error   string `json:"Error"`
			} `json:"State"`
			HostConfig struct {
				RestartPolicy struct {
					Name string `json:"Name"`
				} `json:"RestartPolicy"`
			} `json:"HostConfig"`
		}
		if err := f.Engine.Get(ctx, "/containers/"+c.ID+"/json", &state); err != nil {
			continue
		}
		policy := state.HostConfig.RestartPolicy.Name
		if state.State.Running || state.State.Error == "" || (policy != "always" && policy != "unless-stopped") {
			continue
		}
		code, err := f.Engine.Post(ctx, "/containers/"+c.ID+"/start")
		if err != nil {
			log.WithError(err).Warn("container not started again")
			continue
		}
		log.WithField("status", code).Info("started again now that its binds exist")
	}
	return nil
}

// Follow makes the binds again whenever the engine comes back (Recover),
// tracks containers being created and destroyed, and takes down the binds
// none uses, until ctx ends.
func (f *Follower) Follow(ctx context.Context) {
	grace := f.Binds.grace()
	sweeping := make(chan struct{})
	defer func() { <-sweeping }() // ends with ctx, as Follow does
	go func() {
		defer close(sweeping)
		tick := time.NewTicker(min(max(grace/6, time.Second), 10*time.Second))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f.Binds.Sweep()
			}
		}
	}()
	// Recover whenever the events open: a container created while it
	// runs is still seen, subscribed first.
	f.Engine.Follow(ctx, `{"type":["container"],"event":["create","destroy"]}`, func() error {
		if err := f.Recover(ctx); err != nil {
			f.Log.WithError(err).Warn("the binds of existing containers were not made again")
		}
		return nil
	}, f.handle, f.Log)
}

// handle applies one of the engine's container events.
func (f *Follower) handle(ev engineclient.Event) {
	switch ev.Action {
	case "create":
		var paths []string
		for dst, src := range boundPaths(ev.Actor.Attributes[LabelBinds]) {
			key := f.Binds.ownID(dst)
			if key == "" {
				continue
			}
			// A bind not up was handed out by an earlier run for a create
			// the engine finished after this run's Recover took it down,
			// or its grace passed before the create ended: made again,
			// as Recover would.
			if !f.Binds.tracked(key) {
				path, ok := f.Binds.labelled(key, src)
				if !ok {
					continue
				}
				if _, err := f.Binds.remake(path); err != nil {
					f.Log.WithError(err).WithFields(logrus.Fields{"container": engineclient.ShortID(ev.Actor.ID), "bind": dst}).Warn("a created container's bind cannot be made again")
					continue
				}
			}
			paths = append(paths, dst)
		}
		f.Binds.Use(ev.Actor.ID, paths)
	case "destroy":
		f.Binds.Forget(ev.Actor.ID)
	}
}

// parseWSLPath reads \\wsl$\<distro>\path and \\wsl.localhost\<distro>\path
// (either slash).
func parseWSLPath(src string) (distro, path string, ok bool) {
	s := strings.ReplaceAll(src, `\`, "/")
	for _, prefix := range []string{"//wsl$/", "//wsl.localhost/"} {
		if rest, found := strings.CutPrefix(strings.ToLower(s[:min(len(s), len(prefix))])+s[min(len(s), len(prefix)):], prefix); found {
			distro, path, _ = strings.Cut(rest, "/")
			if distro == "" || distro == "." || distro == ".." {
				return "", "", false
			}
			return distro, "/" + path, true
		}
	}
	return "", "", false
}

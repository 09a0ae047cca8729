package distroproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/sirupsen/logrus"
)

// Follower keeps the binds in step with the engine's containers, over
// connections of its own to the engine.
type Follower struct {
	Binds  *Binds
	Engine *dockerproxy.Engine
	Log    logrus.FieldLogger
}

// SweepGrace is how long a bind nobody uses is kept: long enough for the
// create it was made for to be answered.
const SweepGrace = time.Minute

// boundPaths is a container's label: engine path → source sent.
func boundPaths(label string) map[string]string {
	var m map[string]string
	// A label not made by a proxy (or none) names no bind: nil is right.
	json.Unmarshal([]byte(label), &m)
	return m
}

// Recover makes again the binds this distro's containers need (after WSL
// restarted, the shared tmpfs is empty) and then starts the containers
// whose start failed for want of them: those the engine would have
// restarted by their restart policy.
func (f *Follower) Recover(ctx context.Context) error {
	filters := url.QueryEscape(`{"label":["` + LabelBinds + `"]}`)
	var list []struct {
		ID     string            `json:"Id"`
		Labels map[string]string `json:"Labels"`
	}
	if err := f.Engine.Get(ctx, "/containers/json?all=1&filters="+filters, &list); err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range list {
		var paths []string
		for dst, src := range boundPaths(c.Labels[LabelBinds]) {
			if f.Binds.ownID(dst) == "" {
				continue
			}
			if _, err := f.Binds.Ensure(src, true); err != nil {
				f.Log.WithError(err).WithField("container", c.ID[:12]).Warn("a bind cannot be made again")
				continue
			}
			paths = append(paths, dst)
		}
		if len(paths) == 0 {
			continue
		}
		f.Binds.Use(c.ID, paths)
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
			f.Log.WithError(err).WithField("container", c.ID[:12]).Warn("container not started again")
			continue
		}
		f.Log.WithFields(logrus.Fields{"container": c.ID[:12], "status": code}).Info("started again now that its binds exist")
	}
	return nil
}

// Follow tracks containers being created and destroyed, and takes down
// the binds none uses, until ctx ends.
func (f *Follower) Follow(ctx context.Context) {
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				f.Binds.Sweep(SweepGrace)
			}
		}
	}()
	for delay := 100 * time.Millisecond; ctx.Err() == nil; delay = min(delay*2, 5*time.Second) {
		err := f.events(ctx)
		if ctx.Err() != nil {
			return
		}
		f.Log.WithError(err).Debug("engine events ended; following again")
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

func (f *Follower) events(ctx context.Context) error {
	return f.Engine.Events(ctx, `{"type":["container"],"event":["create","destroy"]}`, nil, func(ev dockerproxy.Event) {
		switch ev.Action {
		case "create":
			var paths []string
			for dst := range boundPaths(ev.Actor.Attributes[LabelBinds]) {
				paths = append(paths, dst)
			}
			f.Binds.Use(ev.Actor.ID, paths)
		case "destroy":
			f.Binds.Forget(ev.Actor.ID)
		}
	})
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

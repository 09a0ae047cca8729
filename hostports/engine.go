package hostports

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/ddinit/ddinit/engineclient"
)

// containerEvents are the events that change which containers run.
const containerEvents = `{"type":["container"],"event":["start","die"]}`

// follow keeps the running host-network containers from docker's events
// until ctx ends: listed anew each time the events open (at first, and
// whenever the engine is back), then changed at each start and die.
func (w *Watcher) follow(ctx context.Context) {
	engine := engineclient.New(w.Dial)
	engine.Follow(ctx, containerEvents,
		func() error { return w.resync(ctx, engine) },
		func(ev engineclient.Event) {
			id := ev.Actor.ID
			switch ev.Action {
			case "start":
				c, ok, err := inspect(ctx, engine, id)
				if err != nil {
					w.Log.WithError(err).WithField("container", engineclient.ShortID(id)).Warn("cannot read a started container: its host-network ports are not forwarded")
					return
				}
				if ok {
					w.setContainers(func(cs map[string]container) map[string]container { cs[id] = c; return cs })
				}
			case "die":
				w.setContainers(func(cs map[string]container) map[string]container { delete(cs, id); return cs })
			}
		}, w.Log)
}

// resync makes the containers those running with the host's network.
func (w *Watcher) resync(ctx context.Context, engine *engineclient.Client) error {
	var list []struct {
		ID         string `json:"Id"`
		HostConfig struct {
			NetworkMode string `json:"NetworkMode"`
		} `json:"HostConfig"`
	}
	if err := engine.Get(ctx, "/containers/json", &list); err != nil {
		return fmt.Errorf("running containers: %w", err)
	}
	cs := map[string]container{}
	for _, c := range list {
		if c.HostConfig.NetworkMode != "host" {
			continue
		}
		// A container gone since the list fails the resync: Follow lists
		// again, without it.
		found, ok, err := inspect(ctx, engine, c.ID)
		if err != nil {
			return err
		}
		if ok {
			cs[c.ID] = found
		}
	}
	w.setContainers(func(map[string]container) map[string]container { return cs })
	return nil
}

// inspect reads a container; ok: it runs with the host's network.
func inspect(ctx context.Context, engine *engineclient.Client, id string) (c container, ok bool, err error) {
	var got struct {
		Name  string `json:"Name"`
		State struct {
			Running bool `json:"Running"`
			Pid     int  `json:"Pid"`
		} `json:"State"`
		HostConfig struct {
			NetworkMode string `json:"NetworkMode"`
		} `json:"HostConfig"`
	}
	if err := engine.Get(ctx, "/containers/"+url.PathEscape(id)+"/json", &got); err != nil {
		return container{}, false, fmt.Errorf("container %s: %w", engineclient.ShortID(id), err)
	}
	c = container{Name: strings.TrimPrefix(got.Name, "/"), Pid: got.State.Pid}
	return c, got.HostConfig.NetworkMode == "host" && got.State.Running && c.Pid > 0, nil
}

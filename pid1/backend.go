package pid1

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/wire"
)

// backend is PID 1's side of the control API.
type backend struct{ in *pid1 }

// ResetKubernetes implements control.Backend.
func (c backend) ResetKubernetes() error { return c.in.resetKubernetes() }

// Kubeconfig implements control.Backend.
func (c backend) Kubeconfig() ([]byte, error) { return c.in.adminKubeconfig() }

// Status implements control.Backend.
func (c backend) Status() control.Status { return c.status(true) }

// Health implements control.Backend: Status without the parts /ping does
// not need (the mount table is read only for /status). Files the boot
// could not use are notes: the engine runs, on what replaced them.
func (c backend) Health() control.Health {
	st := c.status(false)
	h := control.Health{State: st.State, Ready: st.Ready, Reason: st.Reason}
	for _, r := range st.Recovered {
		h.Notes = append(h.Notes, r.String())
	}
	return h
}

// status is what PID 1 observes, told as a switch: while this PID 1 is
// being replaced, or replaces another and its engine is not yet ready,
// it is not healthy and the reason names the switch first.
func (c backend) status(full bool) control.Status {
	st := c.observe(full)
	c.in.mu.Lock()
	why, wasUp := c.in.replaced, c.in.engineWasUp
	c.in.mu.Unlock()
	if why == "" && !st.Ready && !wasUp {
		why = c.in.handoff.Switching
	}
	if why != "" {
		st.Ready = false
		if st.Reason != "" {
			why += ": " + st.Reason
		}
		st.Reason = why
	}
	return st
}

func (c backend) observe(full bool) control.Status {
	in := c.in
	in.mu.Lock()
	st := control.Status{
		Version:    config.Version,
		State:      in.state,
		Reason:     in.reason,
		Started:    in.started,
		Uptime:     time.Since(in.started).Round(time.Second).String(),
		HostPID:    in.handoff.HostPID,
		Components: in.components,
		Goroutines: runtime.NumGoroutine(),
		Orphans:    in.reaper.Orphans(),
	}
	st.Timeline = timeline.Steps(in.bootMarks.Marks())
	st.WakeTimeline = timeline.Steps(in.wakeMarks.Load().Marks())
	st.Phases = append(st.Phases, in.phases...)
	sup, root, ds := in.sup, in.root, in.ds
	st.Drives = append([]control.Drive(nil), in.drives...)
	st.DNS = in.dns
	st.Reach = in.reach
	for _, m := range in.mounted {
		if m.FromDistro {
			st.DistroBinds = append(st.DistroBinds, control.Bind{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly, Slave: m.Slave})
		}
	}
	in.mu.Unlock()
	st.Recovered = recoveries(in.settings.View().Recovered)
	if ds != nil {
		st.DataStore = control.DataStore{Dir: ds.Dir, FreeBytes: ds.FreeBytes, LowSpace: ds.LowSpace}
		// Measured afresh: the store fills while the engine runs. After
		// the root switch the store is reached through its binds.
		for _, p := range []string{"/var/lib/docker", ds.Dir} {
			if free, err := mounts.SpaceLeft(p); err == nil {
				st.DataStore.FreeBytes = free
				st.DataStore.LowSpace = free < mounts.LowSpaceBytes
				break
			}
		}
	}
	if root != nil {
		for _, l := range root.Layers {
			st.Images = append(st.Images, control.Image{Name: l.Name, Source: l.Source, Digest: l.Digest, CacheHit: l.CacheHit, Kernel: root.Kernel})
		}
	}
	if full {
		st.Packs = in.packStatus()
		st.Mounts = mountPoints()
		// The link is wired by ddinit run a moment after PID 1 starts.
		n := network.Describe()
		st.Network = &control.NetworkState{Link: n.Link, Addresses: n.Addresses, Gateways: n.Gateways, Error: n.Error}
	}
	if sup == nil {
		if st.State == control.StateRunning {
			st.State = control.StateBooting
		}
		return st
	}
	st.Containerd = serviceStatus(sup.ContainerdStatus())
	st.Services = serviceStatuses(sup.Status())
	if full {
		st.Kubernetes = in.kubeStatus(sup)
	}
	if st.State == control.StateRunning {
		st.Ready, st.Reason = sup.Health()
		// Stopped on purpose: idle is healthy, liveness rests.
		if state, reason, ready, held := in.engineIdleStatus(); held {
			st.State, st.Reason, st.Ready = state, reason, ready
		}
	}
	set := in.settings.View()
	st.SettingsGeneration, st.Applying, st.SettingsError = set.Generation, set.Applying, set.LastError
	if st.Applying != "" {
		st.Ready, st.Reason = false, "applying settings: "+st.Applying
	}
	if ds != nil && st.DataStore.FreeBytes < mounts.FullBytes {
		st.Ready = false
		st.Reason = fmt.Sprintf("the data store %s is full (%d MB free): free space on the data disk", ds.Dir, st.DataStore.FreeBytes>>20)
	} else if st.DataStore.LowSpace && st.Reason == "" {
		st.Reason = fmt.Sprintf("the data store has only %d MB free", st.DataStore.FreeBytes>>20)
	}
	return st
}

// mountPoints lists this namespace's mount points, as PID 1 sees them.
func mountPoints() []string {
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(table))
	for _, m := range table {
		out = append(out, m.Point+" "+m.FSType)
	}
	return out
}

// Logs implements control.Backend. The empty name is ddinit's own log.
func (c backend) Logs(name string, tail int, follow bool) ([]control.LogLine, <-chan control.LogLine, func(), error) {
	in := c.in
	ring := in.ownLog
	label := "ddinit"
	if name != "" && name != "ddinit" {
		in.mu.Lock()
		sup := in.sup
		in.mu.Unlock()
		if sup == nil {
			return nil, nil, nil, fmt.Errorf("%w: %s: the services have not started yet", errdefs.ErrUnavailable, name)
		}
		var err error
		if ring, err = sup.Logs(name); err != nil {
			return nil, nil, nil, err
		}
		label = name
	}
	convert := func(l logs.Line) control.LogLine {
		return control.LogLine{Time: l.Time, Service: label, Stream: l.Stream, Text: l.Text}
	}
	var lines []control.LogLine
	var src <-chan logs.Line
	var stop func()
	if follow {
		// Subscribe before reading the tail so no line falls between.
		src, stop = ring.Follow()
	}
	for _, l := range ring.Tail(tail) {
		lines = append(lines, convert(l))
	}
	if !follow {
		return lines, nil, nil, nil
	}
	// The reader may go before it has taken every line (a client gone, a
	// hand-over): stopping ends the converter too, so it never waits on a
	// send nobody will take.
	out := make(chan control.LogLine, 64)
	done := make(chan struct{})
	go func() {
		defer close(out)
		for l := range src {
			select {
			case out <- convert(l):
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return lines, out, func() { once.Do(func() { close(done); stop() }) }, nil
}

// Restart implements control.Backend. A stopped (idle) engine is woken:
// its services start afresh, which is the restart.
func (c backend) Restart(name string) error {
	switch stopped, paused := c.in.engineHeld(); {
	case stopped:
		return c.in.wake()
	case paused:
		if err := c.in.wake(); err != nil { // a thaw; the restart follows
			return err
		}
	}
	c.in.mu.Lock()
	sup := c.in.sup
	c.in.mu.Unlock()
	if sup == nil {
		return fmt.Errorf("%w: the services have not started yet", errdefs.ErrUnavailable)
	}
	return sup.Restart(name)
}

// beReplaced (PID 1) shuts down because ddinit run replaces it: /ping
// says why from now on.
func (in *pid1) beReplaced(why string) {
	in.mu.Lock()
	in.replaced = why
	in.mu.Unlock()
	select {
	case in.stop <- why:
	default:
	}
}

// Shutdown implements control.Backend: the same as a SIGTERM.
func (c backend) Shutdown() { c.in.shutdownAsked("control API") }

// shutdownAsked stops PID 1 for good (a signal, POST /shutdown): ddinit
// run is told first, so that no PID 1 follows this one, even one a live
// switch under way would start.
func (in *pid1) shutdownAsked(by string) {
	in.tell(wire.Message{Kind: wire.ShutdownAsked}) // unreported only if ddinit run is gone
	select {
	case in.stop <- by:
	default:
	}
}

package launcher

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/ddinit/ddinit/bridgeroutes"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/hostports"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
)

// reach is what the distros reach of PID 1's namespace beyond published
// ports, for the boot whose network step made it: host-network
// containers' listeners on the distro's loopback (package hostports) and
// the container networks routed through the link (package bridgeroutes).
// Guarded by l.mu but for its parts' own locks.
type reach struct {
	hostPorts bool // the setting, as PID 1 last said (on until it does)
	said      bool // PID 1 has said it
	watcher   *hostports.Watcher
	router    *bridgeroutes.Router
	stop      func()
	// sending serialises the reports to PID 1, so that an older one
	// never arrives last.
	sending sync.Mutex
}

// startReach starts the listeners' forwarding and the routes for the
// boot of PID 1 pid, over link, following dockerd at dockerSocket.
func (l *launcher) startReach(pid int, link *network.Link, dockerSocket string) {
	log := l.log.WithField("component", "reach")
	// Held, not woken, while the engine is stopped idle: ddinit's own.
	dial := func(ctx context.Context) (net.Conn, error) {
		return l.hold.dial(engineclient.WithInternal(ctx), func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, dockerSocket) })
	}
	w := &hostports.Watcher{
		Dial:      dial,
		Namespace: fmt.Sprintf("/proc/%d/ns/net", pid),
		ProcRoot:  fmt.Sprintf("/proc/%d/root/proc", pid),
		Log:       log.WithField("part", "host-network ports"),
		Changed:   l.tellReach,
	}
	r := &bridgeroutes.Router{
		Dial:    dial,
		Link:    network.HostLink,
		Via:     link.InnerAddr.Addr(),
		Log:     log.WithField("part", "container routes"),
		Changed: l.tellReach,
	}
	if link.IPv6Off == "" {
		r.Via6 = link.InnerAddr6.Addr()
	}
	l.mu.Lock()
	on := !l.reach.said || l.reach.hostPorts
	l.mu.Unlock()
	w.SetOn(on)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := r.Run(ctx); err != nil {
			log.WithError(err).Warn("container networks are not routed from the distro")
		}
	}()
	l.mu.Lock()
	l.reach.watcher, l.reach.router = w, r
	l.reach.stop = func() { cancel(); wg.Wait() }
	l.mu.Unlock()
	l.tellReach()
}

// stopReach closes every forward and removes every route of this boot.
func (l *launcher) stopReach() {
	l.mu.Lock()
	stop := l.reach.stop
	l.reach.watcher, l.reach.router, l.reach.stop = nil, nil, nil
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// reachPlan applies what PID 1 says the settings want.
func (l *launcher) reachPlan(p wire.Reach) {
	l.mu.Lock()
	l.reach.hostPorts, l.reach.said = p.HostPorts, true
	w := l.reach.watcher
	l.mu.Unlock()
	if w != nil {
		w.SetOn(p.HostPorts)
	}
	l.tellReach()
}

// tellReach reports what is forwarded and routed now to PID 1, for
// /status.
func (l *launcher) tellReach() {
	l.reach.sending.Lock()
	defer l.reach.sending.Unlock()
	l.mu.Lock()
	w, r := l.reach.watcher, l.reach.router
	st := &control.Reach{HostPorts: !l.reach.said || l.reach.hostPorts, Listeners: []control.HostListener{}, Routes: []control.ContainerRoute{}}
	l.mu.Unlock()
	switch {
	case w == nil:
		st.Error = "no link to the namespace (see ddinit's log): nothing forwarded or routed"
	default:
		st.Listeners = w.State()
		st.Routes = r.State()
	}
	l.tellPID1(wire.Message{Kind: wire.ReachState, ReachNow: st})
}

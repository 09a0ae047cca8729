package bridgeroutes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Protocol marks the routes the router adds (`ip route show proto 221`):
// 0xdd for ddinit, a number /etc/iproute2/rt_protos gives no one. It is
// how a route of a previous run is told from a route someone else put on
// the link.
const Protocol = 221

// Metric is the routes' metric. High, so that whoever adds the same prefix
// later (a VPN, a user's `ip route add` with the default metric 0) gets a
// route of its own beside ours instead of EEXIST, and its lower metric
// wins at once; the router then withdraws ours. 1249 after the link's
// 100.64.249.0/30.
const Metric = 1249

// tableMain is the main table, where the routes go.
const tableMain = unix.RT_TABLE_MAIN

// retryAfter is when a pass that failed (a route that could not be added
// or read) is tried again, if no route or network change comes first.
const retryAfter = 5 * time.Second

// Router routes the subnets of docker's bridge networks from the distro
// to the engine's namespace through the link, and says why it does not
// route the others (State).
type Router struct {
	// Dial dials dockerd's API: a held dial, which may wait while the
	// engine is stopped, so that its networks are read again the moment it
	// is back.
	Dial func(ctx context.Context) (net.Conn, error)
	Link string     // the distro's end of the link, "ddinit0"
	Via  netip.Addr // the namespace's IPv4 address on the link
	// Via6 is the namespace's IPv6 address on the link; invalid when the
	// link has no IPv6: IPv6 subnets are then reported, not routed.
	Via6 netip.Addr
	// Namespace is the distro's network namespace, as a path
	// (/proc/PID/ns/net); "" is the one Run is called in, as in
	// production (ddinit run is in the distro's). Tests point it at one of
	// their own.
	Namespace string
	Log       logrus.FieldLogger
	// Changed is called, not under a lock, after State changed.
	Changed func()

	mu    sync.Mutex
	nets  []Network // nil until /networks was read once
	state []control.ContainerRoute

	kick chan struct{}
	h    *netlink.Handle
	// owned are the routes this router added or adopted, by destination:
	// the only ones it ever deletes. Only the pass (reconcile, then
	// removeAll) touches it, one at a time.
	owned map[netip.Prefix]owned
}

// owned is a route of ours, and the network it was added for (for the
// log when the network is gone).
type owned struct {
	route   netlink.Route
	network string
}

// Run routes until ctx ends; then every route it added is removed. It
// returns an error only when it cannot start (the namespace cannot be
// opened). A Router runs once.
func (r *Router) Run(ctx context.Context) error {
	if r.Log == nil {
		r.Log = discardLog
	}
	var ns netns.NsHandle = netns.None()
	var err error
	if r.Namespace != "" {
		if ns, err = netns.GetFromPath(r.Namespace); err != nil {
			return fmt.Errorf("bridge routes: the distro's network namespace: %w", err)
		}
		defer ns.Close()
		r.h, err = netlink.NewHandleAt(ns)
	} else {
		r.h, err = netlink.NewHandle()
	}
	if err != nil {
		return fmt.Errorf("bridge routes: netlink: %w", err)
	}
	defer r.h.Close()
	r.kick = make(chan struct{}, 1)
	r.owned = map[netip.Prefix]owned{}

	var wg sync.WaitGroup
	wg.Go(func() { r.passes(ctx) })
	wg.Go(func() {
		watchRoutes(ctx, func(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error {
			opts := netlink.RouteSubscribeOptions{ErrorCallback: onErr}
			if r.Namespace != "" {
				opts.Namespace = &ns
			}
			return netlink.RouteSubscribeWithOptions(ch, done, opts)
		}, r.poke, r.Log)
	})
	engine := engineclient.New(r.Dial)
	engine.Follow(ctx, `{"type":["network"],"event":["create","destroy"]}`,
		func() error { return r.readNetworks(ctx, engine) },
		func(ev engineclient.Event) {
			if err := r.readNetworks(ctx, engine); err != nil && ctx.Err() == nil {
				r.Log.WithError(err).WithField("network", ev.Actor.Attributes["name"]).Warn("cannot read docker's networks after a network event; routes follow at the next one")
			}
		}, r.Log)
	wg.Wait()
	r.removeAll()
	// Nothing is routed any more.
	r.mu.Lock()
	r.state = nil
	r.mu.Unlock()
	if r.Changed != nil {
		r.Changed()
	}
	return nil
}

// State is every subnet of docker's networks and whether the distro
// routes it, by network name.
func (r *Router) State() []control.ContainerRoute {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.state)
}

// readNetworks reads docker's networks and asks for a pass.
func (r *Router) readNetworks(ctx context.Context, engine *engineclient.Client) error {
	var nets []Network
	if err := engine.Get(ctx, "/networks", &nets); err != nil {
		return fmt.Errorf("networks: %w", err)
	}
	slices.SortStableFunc(nets, func(a, b Network) int { return strings.Compare(a.Name, b.Name) })
	if nets == nil {
		nets = []Network{}
	}
	r.mu.Lock()
	r.nets = nets
	r.mu.Unlock()
	r.poke()
	return nil
}

// poke asks for a pass; asks that come while one is due are one.
func (r *Router) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// passes brings the routes in line whenever asked, until ctx ends.
func (r *Router) passes(ctx context.Context) {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-retry:
		}
		retry = nil
		if !r.reconcile() {
			retry = time.After(retryAfter)
		}
	}
}

// reconcile reads the distro's routes, decides (plan) and adds, adopts
// and deletes its own routes to match; ok is false when something failed
// and the pass is worth trying again.
func (r *Router) reconcile() (ok bool) {
	r.mu.Lock()
	nets, known := r.nets, r.nets != nil
	r.mu.Unlock()
	if !known {
		return true // nothing to decide before docker's networks are read
	}
	ok = true
	var decisions []decision
	link, err := r.h.LinkByName(r.Link)
	if err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
		r.Log.WithError(err).Warn("cannot read the distro's end of the link; container networks are routed as they were")
		return false
	}
	if err != nil {
		// Its routes went with it: nothing of ours is left to delete.
		clear(r.owned)
		decisions = plan(nets, nil, r.Via, r.Via6)
		for i := range decisions {
			if decisions[i].Routed {
				decisions[i].Routed, decisions[i].Via = false, ""
				decisions[i].Reason = fmt.Sprintf("no %s link in the distro: not routed", r.Link)
			}
		}
		r.setState(decisions)
		return true // the link's return is a route change, which asks again
	}
	idx := link.Attrs().Index
	list, err := r.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		r.Log.WithError(err).Warn("cannot read the distro's routes; container networks are routed as they were")
		return false
	}
	routes, present := r.distroRoutes(list, idx)
	decisions = plan(nets, routes, r.Via, r.Via6)
	want := map[netip.Prefix]int{}
	for i, d := range decisions {
		if d.Routed {
			want[d.Dst] = i
		}
	}
	// Withdrawn first: a subnet whose route now goes through someone
	// else's must not be shadowed by ours one moment longer.
	for dst, o := range r.owned {
		if _, keep := want[dst]; keep {
			continue
		}
		log := r.Log.WithFields(logrus.Fields{"network": o.network, "subnet": dst.String()})
		for _, d := range decisions {
			if d.Dst == dst {
				log = log.WithField("reason", d.Reason)
			}
		}
		if err := r.h.RouteDel(&o.route); err != nil && !errors.Is(err, unix.ESRCH) {
			log.WithError(err).Warn("cannot delete the route to a container network")
			ok = false
			continue
		}
		delete(r.owned, dst)
		log.Info("container network no longer routed")
	}
	for dst, i := range want {
		d := &decisions[i]
		if _, mine := r.owned[dst]; mine && present[dst] != nil {
			continue
		}
		log := r.Log.WithFields(logrus.Fields{"network": d.Network, "subnet": dst.String(), "via": d.Via})
		if old := present[dst]; old != nil {
			if old.Gw.Equal(d.Gw.AsSlice()) {
				// A previous run's (one that crashed, or a router
				// before this one): ours, kept.
				rt := r.route(dst, d.Gw, idx)
				rt.Priority = old.Priority
				r.owned[dst] = owned{rt, d.Network}
				log.Info("container network's route adopted")
				continue
			}
			// Ours through an older address of the link: replaced.
			stale := netlink.Route{LinkIndex: idx, Dst: old.Dst, Gw: old.Gw, Table: tableMain, Priority: old.Priority, Protocol: Protocol}
			if err := r.h.RouteDel(&stale); err != nil && !errors.Is(err, unix.ESRCH) {
				log.WithError(err).Warn("cannot delete a previous run's route to a container network")
			}
		}
		rt := r.route(dst, d.Gw, idx)
		if err := r.h.RouteAdd(&rt); err != nil {
			d.Routed, d.Via = false, ""
			d.Reason = fmt.Sprintf("cannot add the route via %s: %v", r.Link, err)
			log.WithError(err).Warn("cannot route a container network")
			ok = false
			continue
		}
		_, again := r.owned[dst]
		r.owned[dst] = owned{rt, d.Network}
		if again {
			log.Info("container network's route, deleted by someone, added again")
		} else {
			log.Info("container network routed")
		}
	}
	r.setState(decisions)
	return ok
}

// route is ours to dst.
func (r *Router) route(dst netip.Prefix, gw netip.Addr, link int) netlink.Route {
	return netlink.Route{
		LinkIndex: link,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:        gw.AsSlice(),
		Table:     tableMain,
		Priority:  Metric,
		Protocol:  Protocol,
	}
}

// distroRoutes converts the distro's routes for plan, and finds among
// them, by destination, the main table's routes of our Protocol on the
// link (link): ours, or a previous run's.
func (r *Router) distroRoutes(list []netlink.Route, link int) ([]distroRoute, map[netip.Prefix]*netlink.Route) {
	names := map[int]string{}
	name := func(i int) string {
		if n, ok := names[i]; ok {
			return n
		}
		n := fmt.Sprintf("if%d", i)
		if l, err := r.h.LinkByIndex(i); err == nil {
			n = l.Attrs().Name
		}
		names[i] = n
		return n
	}
	var out []distroRoute
	present := map[netip.Prefix]*netlink.Route{}
	for i := range list {
		rt := &list[i]
		switch rt.Type {
		case unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST:
			continue // addresses of the distro's own, not routes elsewhere
		}
		d := distroRoute{Table: rt.Table, OnLink: onLink(rt, link)}
		if rt.Dst != nil {
			if a, ok := netip.AddrFromSlice(rt.Dst.IP); ok {
				bits, _ := rt.Dst.Mask.Size()
				d.Dst = netip.PrefixFrom(a.Unmap(), bits).Masked()
			}
		}
		if d.Dst.Bits() <= 1 {
			continue // a default (see plan), and no text to make
		}
		if d.OnLink {
			if rt.Table == tableMain && rt.Protocol == Protocol && rt.Gw != nil {
				present[d.Dst] = rt
			}
		} else {
			d.Text = describe(rt, d.Dst, name)
		}
		out = append(out, d)
	}
	return out, present
}

// onLink says whether a route's only way out is the link.
func onLink(rt *netlink.Route, link int) bool {
	if len(rt.MultiPath) == 0 {
		return rt.LinkIndex == link
	}
	for _, nh := range rt.MultiPath {
		if nh.LinkIndex != link {
			return false
		}
	}
	return true
}

// describe shows a route as `ip route` does, for State's reason.
func describe(rt *netlink.Route, dst netip.Prefix, name func(int) string) string {
	var b strings.Builder
	switch rt.Type {
	case unix.RTN_UNREACHABLE:
		b.WriteString("unreachable ")
	case unix.RTN_BLACKHOLE:
		b.WriteString("blackhole ")
	case unix.RTN_PROHIBIT:
		b.WriteString("prohibit ")
	case unix.RTN_THROW:
		b.WriteString("throw ")
	}
	b.WriteString(dst.String())
	gw, link := rt.Gw, rt.LinkIndex
	if len(rt.MultiPath) > 0 {
		gw, link = rt.MultiPath[0].Gw, rt.MultiPath[0].LinkIndex
	}
	if gw != nil {
		b.WriteString(" via " + gw.String())
	}
	if link > 0 {
		b.WriteString(" dev " + name(link))
	}
	if len(rt.MultiPath) > 1 {
		fmt.Fprintf(&b, " (and %d more next hops)", len(rt.MultiPath)-1)
	}
	if rt.Table != tableMain {
		fmt.Fprintf(&b, " table %d", rt.Table)
	}
	return b.String()
}

// setState keeps what State says and calls Changed when it changed.
func (r *Router) setState(ds []decision) {
	state := make([]control.ContainerRoute, len(ds))
	for i, d := range ds {
		state[i] = d.ContainerRoute
	}
	r.mu.Lock()
	same := r.state != nil && slices.Equal(r.state, state)
	r.state = state
	r.mu.Unlock()
	if !same && r.Changed != nil {
		r.Changed()
	}
}

// removeAll deletes every route this router added or adopted, and no
// other: each delete names its destination, gateway, link, table, metric
// and protocol.
func (r *Router) removeAll() {
	for dst, o := range r.owned {
		log := r.Log.WithFields(logrus.Fields{"network": o.network, "subnet": dst.String()})
		if err := r.h.RouteDel(&o.route); err != nil && !errors.Is(err, unix.ESRCH) {
			log.WithError(err).Warn("cannot delete the route to a container network")
			continue
		}
		delete(r.owned, dst)
		log.Info("container network no longer routed (ddinit run ends)")
	}
}

var discardLog = func() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}()

package bridgeroutes

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/internal/testutil"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNetns makes a network namespace, without moving the test into it;
// it goes when the test ends.
func newNetns(t *testing.T) netns.NsHandle {
	ns, _ := testutil.NewNetns(t)
	return ns
}

// fakeDocker answers GET /networks with its networks and streams the
// events pushed on events.
type fakeDocker struct {
	mu     sync.Mutex
	nets   []Network
	events chan string
}

func (f *fakeDocker) serve(t *testing.T) (dial func(ctx context.Context) (net.Conn, error)) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /networks", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(f.nets)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		if want := `{"type":["network"],"event":["create","destroy"]}`; r.URL.Query().Get("filters") != want {
			http.Error(w, "filters "+r.URL.Query().Get("filters")+", want "+want, http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case ev := <-f.events:
				fmt.Fprintln(w, ev)
				w.(http.Flusher).Flush()
			}
		}
	})
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
}

// set changes the networks and says so with an event.
func (f *fakeDocker) set(action, name string, nets ...Network) {
	f.mu.Lock()
	f.nets = nets
	f.mu.Unlock()
	f.events <- fmt.Sprintf(`{"Type":"network","Action":%q,"Actor":{"ID":"0123456789abcdef","Attributes":{"name":%q,"type":"bridge"}}}`, action, name)
}

func mustPrefix(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// The router, in a namespace standing for the distro with its ddinit0
// and a wan0 (WSL's eth0, a VPN's tunnel), against a fake docker
// API: it routes a bridge network's subnets through ddinit0, adopting a
// crashed run's route; a network created is routed and one destroyed is
// not; a distro route that overlaps keeps ours out, also when it comes
// later (ours is withdrawn within a second, and back when it goes); when
// Run ends, its routes go and every other stays.
func TestRouterInANetns(t *testing.T) {
	ns := newNetns(t)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// veth pairs, both ends in the namespace and up (a carrier, as the
	// link has): ddinit0 is one in production, and some kernels have no
	// dummy links.
	veth := func(name string, addrs ...string) netlink.Link {
		t.Helper()
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "-peer"}); err != nil {
			t.Fatalf("veth %s: %v", name, err)
		}
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		peer, err := h.LinkByName(name + "-peer")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(peer); err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			addr, _ := netlink.ParseAddr(a)
			if err := h.AddrAdd(link, addr); err != nil {
				t.Fatalf("%s on %s: %v", a, name, err)
			}
		}
		return link
	}
	ddinit0 := veth("ddinit0", "100.64.249.1/30")
	wan0 := veth("wan0", "172.20.0.5/20")
	via6 := netip.MustParseAddr("fd64:100:249::2")
	// The link's IPv6 is optional, as in production.
	if err := h.AddrAdd(ddinit0, &netlink.Addr{IPNet: mustPrefix("fd64:100:249::1/64"), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Logf("no IPv6 in the namespace (%v): the IPv6 subnet is reported, not routed", err)
		via6 = netip.Addr{}
	}
	add := func(r netlink.Route) netlink.Route {
		t.Helper()
		if err := h.RouteAdd(&r); err != nil {
			t.Fatalf("route %v: %v", r, err)
		}
		return r
	}
	gw := net.ParseIP("172.20.0.1")
	others := []netlink.Route{
		add(netlink.Route{LinkIndex: wan0.Attrs().Index, Gw: gw}),                                                                                              // the default
		add(netlink.Route{LinkIndex: wan0.Attrs().Index, Dst: mustPrefix("10.0.0.0/8"), Gw: gw}),                                                               // a VPN's
		add(netlink.Route{LinkIndex: ddinit0.Attrs().Index, Dst: mustPrefix("100.100.0.0/16"), Gw: net.ParseIP("100.64.249.2"), Protocol: unix.RTPROT_STATIC}), // a user's, on the link
	}
	// A crashed run's.
	add(netlink.Route{LinkIndex: ddinit0.Attrs().Index, Dst: mustPrefix("172.17.0.0/16"), Gw: net.ParseIP("100.64.249.2"), Priority: Metric, Protocol: Protocol})

	bridge := network("bridge", "bridge", false, "172.17.0.0/16", "fd00:17::/64")
	corp := network("corp", "bridge", false, "10.99.0.0/16")
	lan := network("lan", "macvlan", false, "192.168.1.0/24")
	app := network("app", "bridge", false, "192.168.100.0/24")
	docker := &fakeDocker{nets: []Network{bridge, corp, lan}, events: make(chan string)}
	dial := docker.serve(t)

	log := logrus.New()
	log.SetOutput(t.Output())
	log.SetLevel(logrus.DebugLevel)
	changed := make(chan struct{}, 1)
	r := &Router{
		Dial:      dial,
		Link:      "ddinit0",
		Via:       netip.MustParseAddr("100.64.249.2"),
		Via6:      via6,
		Namespace: fmt.Sprintf("/proc/self/fd/%d", int(ns)),
		Log:       log,
		Changed: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	}
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not end with its context")
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stop()
		}
	}()

	// ours lists our routes in the namespace, by destination.
	ours := func() map[string]bool {
		t.Helper()
		list, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: Protocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, rt := range list {
			if rt.LinkIndex != ddinit0.Attrs().Index || rt.Priority != Metric {
				t.Errorf("a route of ours not on ddinit0 at metric %d: %v", Metric, rt)
			}
			m[rt.Dst.String()] = true
		}
		return m
	}
	state := func() map[string]control.ContainerRoute {
		m := map[string]control.ContainerRoute{}
		for _, c := range r.State() {
			m[c.Subnet] = c
		}
		return m
	}
	// waitFor waits, for up to a second, until ok, checking at each change
	// of State (the routes change before it does).
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.After(time.Second)
		for !ok() {
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("%s: not within a second; routes of ours %v, state %+v", what, ours(), r.State())
			}
		}
	}

	v6Routed := via6.IsValid()
	waitFor("the bridge network routed", func() bool {
		s := state()
		return s["172.17.0.0/16"].Routed && ours()["172.17.0.0/16"] && s["fd00:17::/64"].Routed == v6Routed && ours()["fd00:17::/64"] == v6Routed
	})
	s := state()
	if got := s["172.17.0.0/16"]; got.Via != "100.64.249.2" || got.Network != "bridge" {
		t.Errorf("bridge: %+v, want routed via 100.64.249.2", got)
	}
	if !v6Routed && s["fd00:17::/64"].Reason != reasonNoIPv6 {
		t.Errorf("bridge's IPv6 subnet without the link's IPv6: %+v", s["fd00:17::/64"])
	}
	if got := s["10.99.0.0/16"]; got.Routed || !strings.Contains(got.Reason, "the distro already routes 10.0.0.0/8 via 172.20.0.1 dev wan0: not routed") {
		t.Errorf("corp under the VPN's 10.0.0.0/8: %+v", got)
	}
	if got := s["192.168.1.0/24"]; got.Routed || got.Reason == "" {
		t.Errorf("a macvlan network: %+v", got)
	}
	if ours()["10.99.0.0/16"] {
		t.Error("corp routed under the VPN's route")
	}

	docker.set("create", "app", bridge, corp, lan, app)
	waitFor("a network created routed", func() bool { return state()["192.168.100.0/24"].Routed && ours()["192.168.100.0/24"] })
	docker.set("destroy", "app", bridge, corp, lan)
	waitFor("a network destroyed no longer routed", func() bool {
		_, listed := state()["192.168.100.0/24"]
		return !listed && !ours()["192.168.100.0/24"]
	})

	vpn := add(netlink.Route{LinkIndex: wan0.Attrs().Index, Dst: mustPrefix("172.16.0.0/12"), Gw: gw})
	waitFor("a route that comes later wins", func() bool {
		got := state()["172.17.0.0/16"]
		return !ours()["172.17.0.0/16"] && !got.Routed && strings.Contains(got.Reason, "the distro already routes 172.16.0.0/12 via 172.20.0.1 dev wan0")
	})
	if err := h.RouteDel(&vpn); err != nil {
		t.Fatal(err)
	}
	waitFor("routed again when it goes", func() bool { return state()["172.17.0.0/16"].Routed && ours()["172.17.0.0/16"] })

	stop()
	if got := ours(); len(got) != 0 {
		t.Errorf("routes of ours left after Run: %v", got)
	}
	if got := r.State(); len(got) != 0 {
		t.Errorf("State after Run: %+v, want nothing routed", got)
	}
	for _, o := range others {
		list, err := h.RouteListFiltered(netlink.FAMILY_V4, &o, netlink.RT_FILTER_DST|netlink.RT_FILTER_GW|netlink.RT_FILTER_OIF)
		if err != nil || len(list) != 1 {
			t.Errorf("someone else's route %v: %d left (%v), want it intact", o, len(list), err)
		}
	}
}

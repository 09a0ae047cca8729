package hostports

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func l(addr string, v6only bool) listener {
	return listener{Container: "c1", Name: "web", Proto: "tcp", Addr: netip.MustParseAddrPort(addr), V6Only: v6only}
}

// Each listener is served where a client of the distro would look for it
// were it listening in the distro, and dialled where it listens.
func TestRoutesOf(t *testing.T) {
	const noV6 = "the distro has no IPv6 loopback"
	for _, c := range []struct {
		l      listener
		noIPv6 string
		want   []route
	}{
		{l("127.0.0.1:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("127.3.2.1:80", false), "", []route{{Distro: "127.3.2.1:80", Dial: "127.3.2.1:80"}}},
		{l("[::1]:80", true), "", []route{{Distro: "[::1]:80", Dial: "[::1]:80"}}},
		{l("0.0.0.0:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("[::]:80", false), "", []route{{Distro: "[::1]:80", Dial: "[::1]:80"}, {Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("[::]:80", true), "", []route{{Distro: "[::1]:80", Dial: "[::1]:80"}}},
		// Another address: the distro's loopback of its family, dialled there.
		{l("100.64.249.2:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "100.64.249.2:80"}}},
		{l("172.17.0.1:53", false), "", []route{{Distro: "127.0.0.1:53", Dial: "172.17.0.1:53"}}},
		{l("[fd00::2]:80", true), "", []route{{Distro: "[::1]:80", Dial: "[fd00::2]:80"}}},
		// v4-mapped: IPv4.
		{l("[::ffff:127.0.0.1]:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("[::ffff:0.0.0.0]:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("[::ffff:10.1.2.3]:80", false), "", []route{{Distro: "127.0.0.1:80", Dial: "10.1.2.3:80"}}},
		// Without IPv6 in the distro: its IPv4 part only, and why.
		{l("[::]:80", false), noV6, []route{{Reason: noV6}, {Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
		{l("[::1]:80", true), noV6, []route{{Reason: noV6}}},
		{l("[fd00::2]:80", true), noV6, []route{{Reason: noV6}}},
		{l("127.0.0.1:80", false), noV6, []route{{Distro: "127.0.0.1:80", Dial: "127.0.0.1:80"}}},
	} {
		if got := routesOf(c.l, c.noIPv6); !slices.Equal(got, c.want) {
			t.Errorf("%s v6only=%v noIPv6=%q: got %+v, want %+v", c.l.Addr, c.l.V6Only, c.noIPv6, got, c.want)
		}
	}
	// Not forwarded at all, with a reason.
	for _, addr := range []string{"[fe80::1]:80", "[fe80::1%eth0]:80", "224.0.0.251:5353", "[ff02::fb]:5353", "255.255.255.255:67"} {
		got := routesOf(l(addr, true), "")
		if len(got) != 1 || got[0].Distro != "" || !strings.HasSuffix(got[0].Reason, "not forwarded") {
			t.Errorf("%s: %+v", addr, got)
		}
	}
}

// Two listeners that want one distro address: the one on that very
// address is served, then the wildcard; the other is reported, naming
// what is served. SO_REUSEPORT siblings are all served.
func TestPlan(t *testing.T) {
	other := func(l listener, id, name string) listener { l.Container, l.Name = id, name; return l }
	udp := func(l listener) listener { l.Proto = "udp"; return l }
	for _, c := range []struct {
		name   string
		ls     []listener
		want   map[fwdKey]string
		served map[string][]string // "listen container" -> each route's Distro or Reason, sorted
	}{
		{
			name:   "the loopback listener before another address's",
			ls:     []listener{other(l("10.0.0.2:80", false), "c2", "api"), l("127.0.0.1:80", false)},
			want:   map[fwdKey]string{{"tcp", "127.0.0.1:80"}: "127.0.0.1:80"},
			served: map[string][]string{"127.0.0.1:80 c1": {"127.0.0.1:80"}, "10.0.0.2:80 c2": {"127.0.0.1:80 is served for web's listener on 127.0.0.1:80: not forwarded"}},
		},
		{
			name: "the wildcard of the family before the dual-stack one, before another address",
			ls:   []listener{other(l("[::]:80", false), "c2", "six"), other(l("10.0.0.2:80", false), "c3", ""), l("0.0.0.0:80", false)},
			want: map[fwdKey]string{{"tcp", "127.0.0.1:80"}: "127.0.0.1:80", {"tcp", "[::1]:80"}: "[::1]:80"},
			served: map[string][]string{
				"0.0.0.0:80 c1":  {"127.0.0.1:80"},
				"[::]:80 c2":     {"127.0.0.1:80", "[::1]:80"}, // its IPv4 half: the same target
				"10.0.0.2:80 c3": {"127.0.0.1:80 is served for web's listener on 0.0.0.0:80: not forwarded"},
			},
		},
		{
			name:   "the same address in two containers (SO_REUSEPORT): served for both",
			ls:     []listener{other(l("0.0.0.0:80", false), "c2", ""), l("0.0.0.0:80", false)},
			want:   map[fwdKey]string{{"tcp", "127.0.0.1:80"}: "127.0.0.1:80"},
			served: map[string][]string{"0.0.0.0:80 c1": {"127.0.0.1:80"}, "0.0.0.0:80 c2": {"127.0.0.1:80"}},
		},
		{
			name:   "two other addresses: the lower served, whatever the order",
			ls:     []listener{other(l("10.0.0.9:80", false), "c2", ""), l("10.0.0.2:80", false)},
			want:   map[fwdKey]string{{"tcp", "127.0.0.1:80"}: "10.0.0.2:80"},
			served: map[string][]string{"10.0.0.2:80 c1": {"127.0.0.1:80"}, "10.0.0.9:80 c2": {"127.0.0.1:80 is served for web's listener on 10.0.0.2:80: not forwarded"}},
		},
		{
			name:   "TCP and UDP on one port: both",
			ls:     []listener{udp(l("0.0.0.0:53", false)), l("0.0.0.0:53", false)},
			want:   map[fwdKey]string{{"tcp", "127.0.0.1:53"}: "127.0.0.1:53", {"udp", "127.0.0.1:53"}: "127.0.0.1:53"},
			served: map[string][]string{"0.0.0.0:53 c1": {"127.0.0.1:53", "127.0.0.1:53"}},
		},
		{
			name: "the dual-stack wildcard before another address",
			ls:   []listener{other(l("10.0.0.2:80", false), "c3", ""), other(l("[::]:80", false), "c2", "six")},
			want: map[fwdKey]string{{"tcp", "127.0.0.1:80"}: "127.0.0.1:80", {"tcp", "[::1]:80"}: "[::1]:80"},
			served: map[string][]string{
				"[::]:80 c2":     {"127.0.0.1:80", "[::1]:80"},
				"10.0.0.2:80 c3": {"127.0.0.1:80 is served for six's listener on [::]:80: not forwarded"},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			reversed := slices.Clone(c.ls)
			slices.Reverse(reversed)
			for _, order := range [][]listener{c.ls, reversed} {
				entries, want := plan(order, "")
				if !maps.Equal(want, c.want) {
					t.Errorf("wanted %v, want %v", want, c.want)
				}
				got := map[string][]string{}
				for _, e := range entries {
					key := e.l.Addr.String() + " " + e.l.Container
					got[key] = append(got[key], cmp.Or(e.Distro, e.Reason))
				}
				for _, v := range got {
					slices.Sort(v)
				}
				if !maps.EqualFunc(got, c.served, slices.Equal) {
					t.Errorf("got %q, want %q", got, c.served)
				}
			}
		})
	}
}

// The diff opens what is new, closes what went, and opens anew what dials
// elsewhere now.
func TestDiff(t *testing.T) {
	a, b, c := fwdKey{"tcp", "127.0.0.1:80"}, fwdKey{"udp", "127.0.0.1:53"}, fwdKey{"tcp", "[::1]:80"}
	for _, tc := range []struct {
		name             string
		open, want       map[fwdKey]string
		closing, opening []fwdKey
	}{
		{"nothing", nil, nil, nil, nil},
		{"new", nil, map[fwdKey]string{a: "127.0.0.1:80", b: "127.0.0.1:53"}, nil, []fwdKey{a, b}},
		{"gone", map[fwdKey]string{a: "127.0.0.1:80", c: "[::1]:80"}, nil, []fwdKey{a, c}, nil},
		{"kept", map[fwdKey]string{a: "127.0.0.1:80"}, map[fwdKey]string{a: "127.0.0.1:80"}, nil, nil},
		{"moved", map[fwdKey]string{a: "10.0.0.2:80", b: "127.0.0.1:53"}, map[fwdKey]string{a: "127.0.0.1:80", b: "127.0.0.1:53"}, []fwdKey{a}, []fwdKey{a}},
		{"all at once", map[fwdKey]string{a: "10.0.0.2:80", b: "127.0.0.1:53"}, map[fwdKey]string{a: "127.0.0.1:80", c: "[::1]:80"}, []fwdKey{a, b}, []fwdKey{a, c}},
	} {
		closing, opening := diff(tc.open, tc.want)
		if !slices.Equal(closing, tc.closing) || !slices.Equal(opening, tc.opening) {
			t.Errorf("%s: closing %v opening %v, want %v %v", tc.name, closing, opening, tc.closing, tc.opening)
		}
	}
}

package bridgeroutes

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/control"
)

func network(name, driver string, internal bool, subnets ...string) Network {
	n := Network{Name: name, Driver: driver, Scope: "local", Internal: internal}
	for _, s := range subnets {
		n.IPAM.Config = append(n.IPAM.Config, struct {
			Subnet string `json:"Subnet"`
		}{s})
	}
	return n
}

func route(dst string, table int, onLink bool, text string) distroRoute {
	return distroRoute{Dst: netip.MustParsePrefix(dst), Table: table, OnLink: onLink, Text: text}
}

func TestPlan(t *testing.T) {
	via, via6 := netip.MustParseAddr("100.64.249.2"), netip.MustParseAddr("fd64:100:249::2")
	bridge := network("bridge", "bridge", false, "172.17.0.0/16")
	routed := control.ContainerRoute{Network: "bridge", Subnet: "172.17.0.0/16", Via: "100.64.249.2", Routed: true}
	overlap := func(text string) control.ContainerRoute {
		return control.ContainerRoute{Network: "bridge", Subnet: "172.17.0.0/16",
			Reason: "the distro already routes " + text + ": not routed (a VPN's, WSL's or another engine's own network)"}
	}
	for _, tc := range []struct {
		name   string
		nets   []Network
		routes []distroRoute
		noVia6 bool
		want   []control.ContainerRoute
	}{
		{
			name: "no overlap",
			nets: []Network{bridge},
			routes: []distroRoute{
				route("172.20.0.0/20", 254, false, "172.20.0.0/20 dev eth0"),
				route("10.0.0.0/8", 254, false, "10.0.0.0/8 via 172.20.0.1 dev eth0"),
			},
			want: []control.ContainerRoute{routed},
		},
		{
			name:   "exact overlap",
			nets:   []Network{bridge},
			routes: []distroRoute{route("172.17.0.0/16", 254, false, "172.17.0.0/16 dev docker0")},
			want:   []control.ContainerRoute{overlap("172.17.0.0/16 dev docker0")},
		},
		{
			name:   "a wider distro route",
			nets:   []Network{bridge},
			routes: []distroRoute{route("172.16.0.0/12", 254, false, "172.16.0.0/12 via 172.20.0.1 dev eth0")},
			want:   []control.ContainerRoute{overlap("172.16.0.0/12 via 172.20.0.1 dev eth0")},
		},
		{
			name:   "a narrower one inside the subnet, in another table",
			nets:   []Network{bridge},
			routes: []distroRoute{route("172.17.5.0/24", 127, false, "172.17.5.0/24 dev tun0 table 127")},
			want:   []control.ContainerRoute{overlap("172.17.5.0/24 dev tun0 table 127")},
		},
		{
			name: "defaults, /1 halves and the local table are not counted",
			nets: []Network{bridge},
			routes: []distroRoute{
				{Table: 254, Text: "default via 172.20.0.1 dev eth0"},
				route("0.0.0.0/0", 254, false, "default via 10.8.0.1 dev tun0 table 51820"),
				route("0.0.0.0/1", 254, false, "0.0.0.0/1 via 10.8.0.1 dev tun0"),
				route("128.0.0.0/1", 254, false, "128.0.0.0/1 via 10.8.0.1 dev tun0"),
				route("172.17.0.1/32", 255, false, "local 172.17.0.1 dev eth0 table local"),
			},
			want: []control.ContainerRoute{routed},
		},
		{
			name: "routes on the link are not counted",
			nets: []Network{bridge},
			routes: []distroRoute{
				route("172.17.0.0/16", 254, true, ""),
				route("100.64.0.0/10", 254, true, ""),
			},
			want: []control.ContainerRoute{routed},
		},
		{
			name: "IPv6 with the link's IPv6",
			nets: []Network{network("v6", "bridge", false, "fd00:dead:beef::/48")},
			want: []control.ContainerRoute{{Network: "v6", Subnet: "fd00:dead:beef::/48", Via: "fd64:100:249::2", Routed: true}},
		},
		{
			name:   "IPv6 without the link's IPv6",
			nets:   []Network{network("v6", "bridge", false, "fd00:dead:beef::/48")},
			noVia6: true,
			want:   []control.ContainerRoute{{Network: "v6", Subnet: "fd00:dead:beef::/48", Reason: reasonNoIPv6}},
		},
		{
			name:   "an IPv6 route does not overlap an IPv4 subnet",
			nets:   []Network{bridge},
			routes: []distroRoute{route("::ffff:0:0/96", 254, false, "::ffff:0:0/96 dev sit0")},
			want:   []control.ContainerRoute{routed},
		},
		{
			name: "internal network",
			nets: []Network{network("secret", "bridge", true, "172.30.0.0/16")},
			want: []control.ContainerRoute{{Network: "secret", Subnet: "172.30.0.0/16", Reason: reasonInternal}},
		},
		{
			name: "non-bridge drivers",
			nets: []Network{
				network("host", "host", false),
				network("none", "null", false),
				network("lan", "macvlan", false, "192.168.1.0/24"),
				network("ingress", "overlay", false, "10.0.0.0/24"),
			},
			want: []control.ContainerRoute{
				{Network: "lan", Subnet: "192.168.1.0/24", Reason: `driver "macvlan": only bridge networks are routed`},
				{Network: "ingress", Subnet: "10.0.0.0/24", Reason: `driver "overlay": only bridge networks are routed`},
			},
		},
		{
			name: "two subnets, one overlapped",
			nets: []Network{network("dual", "bridge", false, "172.18.0.0/16", "fd00:1::/64")},
			routes: []distroRoute{
				route("fd00::/8", 254, false, "fd00::/8 dev wg0"),
				route("::/1", 254, false, "::/1 dev wg0"),
			},
			want: []control.ContainerRoute{
				{Network: "dual", Subnet: "172.18.0.0/16", Via: "100.64.249.2", Routed: true},
				{Network: "dual", Subnet: "fd00:1::/64",
					Reason: "the distro already routes fd00::/8 dev wg0: not routed (a VPN's, WSL's or another engine's own network)"},
			},
		},
		{
			name: "a subnet docker gives unmasked is routed masked",
			nets: []Network{network("odd", "bridge", false, "172.19.3.4/16")},
			want: []control.ContainerRoute{{Network: "odd", Subnet: "172.19.3.4/16", Via: "100.64.249.2", Routed: true}},
		},
		{
			name: "a subnet that does not parse",
			nets: []Network{network("bad", "bridge", false, "nonsense")},
			want: []control.ContainerRoute{{Network: "bad", Subnet: "nonsense"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v6 := via6
			if tc.noVia6 {
				v6 = netip.Addr{}
			}
			got := plan(tc.nets, tc.routes, via, v6)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d decisions, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, d := range got {
				want := tc.want[i]
				if want.Subnet == "nonsense" {
					// The parser's words are its own.
					if d.Routed || !strings.HasPrefix(d.Reason, `subnet "nonsense": `) {
						t.Errorf("got %+v, want not routed, naming the subnet", d.ContainerRoute)
					}
					continue
				}
				if d.ContainerRoute != want {
					t.Errorf("decision %d:\n got %+v\nwant %+v", i, d.ContainerRoute, want)
				}
				if d.Routed && (d.Dst != netip.MustParsePrefix(d.Subnet).Masked() || d.Gw.String() != d.Via) {
					t.Errorf("decision %d routes %s via %s, want %s masked via %s", i, d.Dst, d.Gw, d.Subnet, d.Via)
				}
			}
		})
	}
}

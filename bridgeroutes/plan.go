package bridgeroutes

import (
	"fmt"
	"net/netip"

	"github.com/ddinit/ddinit/control"
)

// Network is what the router reads of one of docker's networks
// (GET /networks).
type Network struct {
	Name   string `json:"Name"`
	Driver string `json:"Driver"`
	// Scope is not decisive: a bridge network's containers are on this
	// engine's bridge whatever its scope ("swarm" for one made with
	// --scope swarm).
	Scope    string `json:"Scope"`
	Internal bool   `json:"Internal"`
	IPAM     struct {
		Config []struct {
			Subnet string `json:"Subnet"`
		} `json:"Config"`
	} `json:"IPAM"`
}

// distroRoute is one route of the distro's, as the decision needs it.
type distroRoute struct {
	Dst    netip.Prefix // masked; the zero Prefix for a default route
	Table  int
	OnLink bool   // its only way out is the link (ddinit0): ours, or one the distro made on our link
	Text   string // as `ip route` shows it: "172.16.0.0/12 via 172.20.0.1 dev eth0"
}

// tableLocal is the kernel's local table: the distro's own addresses and
// broadcasts, not routes to elsewhere.
const tableLocal = 255

// decision is one subnet of one network and whether it is routed: Dst
// is the subnet (the zero Prefix when it does not parse), Gw the route's
// gateway when Routed.
type decision struct {
	control.ContainerRoute
	Dst netip.Prefix
	Gw  netip.Addr
}

// Reasons a subnet is not routed, for /status.
const (
	reasonInternal = "internal network: no way back out"
	reasonNoIPv6   = "the link has no IPv6: not routed"
	reasonNoIPv4   = "the link has no IPv4 address: not routed"
)

// plan decides, for docker's networks and the distro's routes, which
// subnets the distro routes through the link (via for IPv4, via6 for
// IPv6; an invalid one leaves that family unrouted) and why each other
// one is not. It is the whole policy, kept pure so that it is tested as a
// table:
//
//   - only bridge networks (the default "bridge" one included): a macvlan
//     or ipvlan network's containers are on a parent link the distro does
//     not share, an overlay's on other nodes, host and null have no
//     subnet of their own;
//   - an internal network is not: docker gives it no way back out, so a
//     packet from the distro would reach the container and its answer
//     not return;
//   - a subnet that overlaps a route the distro has (either contains the
//     other) is not, whatever its metric: that route is a VPN's, WSL's
//     own network or another engine's, and ours would shadow it (a
//     longer prefix wins over any metric) or be shadowed. Routes in the
//     local table, routes on the link itself (ours, and what a user put
//     there) and routes of /0 and /1 (defaults, and OpenVPN's def1 halves,
//     which only stand for the default) are not counted.
func plan(nets []Network, routes []distroRoute, via, via6 netip.Addr) []decision {
	var out []decision
	for _, n := range nets {
		for _, c := range n.IPAM.Config {
			if c.Subnet == "" {
				continue
			}
			d := decision{ContainerRoute: control.ContainerRoute{Network: n.Name, Subnet: c.Subnet}}
			d.Reason = reason(n, c.Subnet, routes, via, via6, &d)
			d.Routed = d.Reason == ""
			out = append(out, d)
		}
	}
	return out
}

// reason says why the subnet is not routed, or "" and fills d's Gw and
// Via when it is.
func reason(n Network, subnet string, routes []distroRoute, via, via6 netip.Addr, d *decision) string {
	if n.Driver != "bridge" {
		return fmt.Sprintf("driver %q: only bridge networks are routed", n.Driver)
	}
	if n.Internal {
		return reasonInternal
	}
	p, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Sprintf("subnet %q: %v", subnet, err)
	}
	p = p.Masked()
	d.Dst = p
	gw := via
	if p.Addr().Is6() {
		gw = via6
		if !gw.IsValid() {
			return reasonNoIPv6
		}
	} else if !gw.IsValid() {
		return reasonNoIPv4
	}
	for _, r := range routes {
		if r.Table == tableLocal || r.OnLink || r.Dst.Bits() <= 1 {
			continue
		}
		if r.Dst.Overlaps(p) {
			return fmt.Sprintf("the distro already routes %s: not routed (a VPN's, WSL's or another engine's own network)", r.Text)
		}
	}
	d.Gw, d.Via = gw, gw.String()
	return ""
}

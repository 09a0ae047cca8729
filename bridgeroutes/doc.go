// Package bridgeroutes makes containers reachable from the distro by
// their IP addresses, as they are from the host on Linux. Docker's bridge
// networks live in the engine's network namespace, which the distro
// reaches only through the link (ddinit0 in the distro, eth0 there); the
// router adds, in the distro's main table, a route per subnet of each
// bridge network:
//
//	172.17.0.0/16 via 100.64.249.2 dev ddinit0 proto 221 metric 1249
//
// (and through the link's IPv6 address for IPv6 subnets, when the link
// has IPv6). It follows docker's networks through the events API
// (network create and destroy; the list read again whenever the stream
// opens), and the distro's routes through a netlink subscription, and
// says for /status why each subnet is or is not routed (State).
//
// In WSL every distro shares one network namespace, and WSL, VPN clients
// and other engines route subnets there too. The router owns the routes
// of its Protocol it adds on the link, and only those: it must never
// change, withdraw or shadow a route it did not add, nor touch anything
// of the namespace but its own routes on the link. So a subnet that
// overlaps a route the distro has (either contains the other, in any
// table but local; routes on the link itself and the /0 and /1 defaults,
// OpenVPN's def1 halves among them, are not counted) is not routed and
// State names the route that wins; a route that appears later wins too:
// ours is withdrawn at once, and routed again when that route goes. Its
// high metric (Metric) lets a VPN add the very same prefix beside ours,
// where a lower metric would have failed with EEXIST against it. When Run
// ends, every route it added is removed; one of its Protocol left on the
// link by a run that crashed is adopted as its own.
//
// Internal networks (no way back out), and networks of other drivers
// (macvlan, ipvlan, overlay: their containers are not on a bridge in the
// engine's namespace) are reported, not routed. The link and the
// forwarding and NAT that carry the packets are package network's.
package bridgeroutes

package network

import (
	"net"
	"net/netip"
	"strconv"
)

// Route is how a published binding is served in the distro: where ddinit
// listens, and where a connection is carried to reach the container.
type Route struct {
	Listen string // host:port in the distro
	Dial   string // host:port the connection goes to
	// InNamespace: Dial from a socket made in the engine's network
	// namespace, where the binding's own address is (127.0.0.1 there is
	// the namespace's loopback); otherwise from the distro, over the link.
	InNamespace bool
}

// RouteOf decides, for a binding dockerd reports, where it is served and
// how it is reached, given the namespace's address on the link:
//
//	0.0.0.0 (or none) → every address of the distro, both families (one
//	                    dual-stack listener) → the link address, where
//	                    dockerd publishes it
//	::                → every IPv6 address of the distro → [::1] in the
//	                    namespace
//	a specific A      → A in the distro → A in the namespace
//	                    (127.0.0.1, ::1: each side's own loopback)
//
// dockerd lists a "::" binding beside each "0.0.0.0" one; twin says this
// "::" binding has one, whose dual-stack listener serves it: ok is false.
func RouteOf(hostIP string, port int, link netip.Addr, twin bool) (r Route, ok bool) {
	p := strconv.Itoa(port)
	switch hostIP {
	case "", "0.0.0.0":
		return Route{Listen: net.JoinHostPort("0.0.0.0", p), Dial: net.JoinHostPort(link.String(), p)}, true
	case "::":
		if twin {
			return Route{}, false
		}
		return Route{Listen: net.JoinHostPort("::", p), Dial: net.JoinHostPort("::1", p), InNamespace: true}, true
	}
	a, err := netip.ParseAddr(hostIP)
	if err != nil {
		return Route{}, false
	}
	addr := net.JoinHostPort(a.Unmap().String(), p)
	return Route{Listen: addr, Dial: addr, InNamespace: true}, true
}

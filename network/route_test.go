package network

import (
	"net/netip"
	"testing"
)

// The binding → listen address → dial target table.
func TestRouteOf(t *testing.T) {
	link := netip.MustParseAddr("100.64.249.2")
	for _, c := range []struct {
		hostIP string
		twin   bool
		want   Route
		ok     bool
	}{
		{"", false, Route{Listen: "0.0.0.0:8080", Dial: "100.64.249.2:8080"}, true},
		{"0.0.0.0", false, Route{Listen: "0.0.0.0:8080", Dial: "100.64.249.2:8080"}, true},
		{"::", true, Route{}, false},
		{"::", false, Route{Listen: "[::]:8080", Dial: "[::1]:8080", InNamespace: true}, true},
		{"127.0.0.1", false, Route{Listen: "127.0.0.1:8080", Dial: "127.0.0.1:8080", InNamespace: true}, true},
		{"::1", false, Route{Listen: "[::1]:8080", Dial: "[::1]:8080", InNamespace: true}, true},
		{"::ffff:127.0.0.1", false, Route{Listen: "127.0.0.1:8080", Dial: "127.0.0.1:8080", InNamespace: true}, true},
		{"192.168.1.5", false, Route{Listen: "192.168.1.5:8080", Dial: "192.168.1.5:8080", InNamespace: true}, true},
		{"not an address", false, Route{}, false},
	} {
		got, ok := RouteOf(c.hostIP, 8080, link, c.twin)
		if ok != c.ok || got != c.want {
			t.Errorf("%q (twin %v): %+v %v, want %+v %v", c.hostIP, c.twin, got, ok, c.want, c.ok)
		}
	}
}

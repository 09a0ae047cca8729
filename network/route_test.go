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

// A binding configured as "" and the same one running as "0.0.0.0" are
// one listener; a "::" binding has a twin only in its own container.
func TestBindingKeysAndTwins(t *testing.T) {
	configured := binding{Container: "a", Proto: "tcp", HostIP: "", HostPort: 8080}
	running := binding{Container: "a", Proto: "tcp", HostIP: "0.0.0.0", HostPort: 8080}
	if configured.key() != running.key() {
		t.Fatalf("%s and %s name one listener", configured.key(), running.key())
	}
	v6 := binding{Container: "a", Proto: "tcp", HostIP: "::", HostPort: 8080}
	if !v6.hasTwin([]binding{running, v6}) {
		t.Fatal("the :: twin of a 0.0.0.0 binding was not seen")
	}
	other := binding{Container: "b", Proto: "tcp", HostIP: "0.0.0.0", HostPort: 8080}
	if v6.hasTwin([]binding{other, v6}) {
		t.Fatal("another container's 0.0.0.0 binding taken for this one's twin")
	}
}

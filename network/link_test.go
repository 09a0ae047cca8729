package network

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestAddrs(t *testing.T) {
	h, in, err := Addrs(DefaultSubnet)
	if err != nil || h.String() != "100.64.249.1/30" || in.String() != "100.64.249.2/30" {
		t.Fatalf("Addrs(%s) = %s, %s, %v", DefaultSubnet, h, in, err)
	}
	h, in, err = Addrs6(DefaultSubnet6)
	if err != nil || h.String() != "fd64:100:249::1/64" || in.String() != "fd64:100:249::2/64" {
		t.Fatalf("Addrs6(%s) = %s, %s, %v", DefaultSubnet6, h, in, err)
	}
	for _, bad := range []string{"", "10.0.0.0/31", "fd00::/64", "not-a-prefix"} {
		if _, _, err := Addrs(bad); err == nil {
			t.Errorf("Addrs(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/24", "::ffff:10.0.0.0/120", "fd00::/127", "fd00::"} {
		if _, _, err := Addrs6(bad); err == nil {
			t.Errorf("Addrs6(%q) accepted", bad)
		}
	}
}

// TestForwarding6Restores turns IPv6 forwarding on and off again in a
// namespace of its own: an interface that took router advertisements
// keeps taking them while forwarding is on, and every value, an
// interface's own forwarding flag included, is what it was afterwards.
func TestForwarding6Restores(t *testing.T) {
	// /proc/sys/net is the namespace of the thread that opens it.
	ns, leave := enterNewNetns(t)
	defer leave()
	defer ns.Close()
	if distroIPv6() != "" {
		t.Skipf("no IPv6 here: %s", distroIPv6())
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ra0"}, PeerName: "fwd0"}); err != nil {
		t.Fatal(err)
	}
	set := func(path, v string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(ipv6Conf, path), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	get := func(path string) string {
		t.Helper()
		v, err := readSysctl(filepath.Join(ipv6Conf, path))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	set("all/forwarding", "0")
	set("ra0/accept_ra", "1")
	set("fwd0/accept_ra", "0")
	set("fwd0/forwarding", "1")

	l := &Link{}
	if err := l.enableForwarding6(); err != nil {
		t.Fatal(err)
	}
	if get("all/forwarding") != "1" || get("ra0/forwarding") != "1" {
		t.Fatalf("forwarding not on: all %s, ra0 %s", get("all/forwarding"), get("ra0/forwarding"))
	}
	if get("ra0/accept_ra") != "2" {
		t.Fatalf("ra0 accept_ra %s while forwarding: it would drop router advertisements", get("ra0/accept_ra"))
	}
	if err := l.unwireIPv6(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"all/forwarding": "0", "ra0/forwarding": "0", "ra0/accept_ra": "1", "fwd0/forwarding": "1", "fwd0/accept_ra": "0"} {
		if got := get(path); got != want {
			t.Errorf("%s is %s after the restore, was %s", path, got, want)
		}
	}
}

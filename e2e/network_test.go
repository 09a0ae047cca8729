package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const hostSide = "100.64.249.1" // the distro's end of ddinit's link (default subnet)

// farV6 is the IPv6 address of the host beyond the distro; nothing routes
// ddinit's IPv6 prefix there, so only NAT66 reaches it.
const farV6 = "fd65:198:18:7::2"

// serveOnce answers every connection on l with msg.
func serveOnce(l net.Listener, msg string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		io.WriteString(c, msg)
		c.Close()
	}
}

// internet makes a network namespace standing in for a host beyond the
// distro: linked to the distro only, with no route back to ddinit's
// subnet, so a container reaches it only through ddinit's NAT. It serves
// msg on 198.18.7.2:8099 and [farV6]:8099.
func internet(t *testing.T, msg string) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	netns.DeleteNamed("ddinit-e2e-inet")
	if l, err := netlink.LinkByName("ddinit-e2e0"); err == nil {
		netlink.LinkDel(l)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ddinit-e2e0"}, PeerName: "ddinit-e2e1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("ddinit-e2e0"); err == nil {
			netlink.LinkDel(l)
		}
		netns.DeleteNamed("ddinit-e2e-inet")
	})
	host, _ := netlink.LinkByName("ddinit-e2e0")
	netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.18.7.1"), Mask: net.CIDRMask(30, 32)}})
	netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fd65:198:18:7::1"), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD})
	netlink.LinkSetUp(host)
	inet, err := netns.NewNamed("ddinit-e2e-inet") // this thread is now inside
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	defer inet.Close()
	netns.Set(orig)
	peer, _ := netlink.LinkByName("ddinit-e2e1")
	if err := netlink.LinkSetNsFd(peer, int(inet)); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(inet)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	peer, _ = h.LinkByName("ddinit-e2e1")
	h.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.18.7.2"), Mask: net.CIDRMask(30, 32)}})
	h.AddrAdd(peer, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(farV6), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD})
	h.LinkSetUp(peer)
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	netns.Set(inet)
	l, err := net.Listen("tcp", "198.18.7.2:8099")
	var l6 net.Listener
	if err == nil {
		l6, err = net.Listen("tcp", net.JoinHostPort(farV6, "8099"))
	}
	netns.Set(orig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); l6.Close() })
	go serveOnce(l, msg)
	go serveOnce(l6, msg)
	return "198.18.7.2"
}

func TestContainerNetworking(t *testing.T) {
	harness.RequireEnvironment(t)
	forwardBefore, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	ipv6Before := ipv6Sysctls()
	distroHasIPv6 := strings.TrimSpace(ipv6Before["all/disable_ipv6"]) == "0"
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\nsearch corp.example.test\n"), 0o644)
	outside, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	go serveOnce(outside, "hello from the distro")
	port := outside.Addr().(*net.TCPAddr).Port
	far := internet(t, "hello from beyond the distro")

	in := harness.Start(t, harness.Options{Extra: []string{"--resolv-conf", resolv}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()

	// A server in the distro's namespace, reached from a container.
	out := in.Docker("run", "--rm", "busybox:local", "nc", hostSide, fmt.Sprint(port))
	if out != "hello from the distro" {
		t.Fatalf("container -> distro: %q", out)
	}
	// A host with no route back to ddinit's subnet: only NAT gets there.
	out = in.Docker("run", "--rm", "busybox:local", "nc", far, "8099")
	if out != "hello from beyond the distro" {
		t.Fatalf("container -> beyond the distro (NAT): %q", out)
	}
	// IPv6 where the distro has it: the namespace (dockerd, and a
	// host-network container) reaches the far host's IPv6 address, which
	// has no route back to ddinit's prefix, so only NAT66 gets there.
	if distroHasIPv6 {
		out = in.Docker("run", "--rm", "--network", "host", "busybox:local", "nc", farV6, "8099")
		if out != "hello from beyond the distro" {
			t.Fatalf("namespace -> beyond the distro over IPv6 (NAT66): %q", out)
		}
	} else {
		t.Log("the distro's namespace has IPv6 disabled: the IPv6 path is not tested here")
	}
	// /status shows the namespace's end of the link as the namespace sees it.
	var st struct {
		Network struct {
			Addresses []string `json:"addresses"`
			Gateways  []string `json:"gateways"`
		} `json:"network"`
	}
	if _, body := in.Get(http.MethodGet, "/status"); json.Unmarshal([]byte(body), &st) != nil || !slices.Contains(st.Network.Addresses, "100.64.249.2/30") || !slices.Contains(st.Network.Gateways, hostSide) {
		t.Fatalf("/status network: %+v", st.Network)
	}
	if distroHasIPv6 && (!slices.Contains(st.Network.Addresses, "fd64:100:249::2/64") || !slices.Contains(st.Network.Gateways, "fd64:100:249::1")) {
		t.Fatalf("/status network has no IPv6: %+v", st.Network)
	}
	// Containers ask ddinit's forwarder (which asks the distro's
	// nameservers), with the distro's search list.
	out = in.Docker("run", "--rm", "busybox:local", "cat", "/etc/resolv.conf")
	if !strings.Contains(out, "nameserver 100.64.249.2") || strings.Contains(out, "192.0.2.53") || !strings.Contains(out, "search corp.example.test") {
		t.Fatalf("container resolv.conf:\n%s", out)
	}

	// A published port answers in the distro, and closes with its container.
	in.Docker("run", "-d", "--name", "web", "-p", "18080:80", "busybox:local", "sh", "-c", "mkdir /www && echo page-from-container > /www/index.html && exec httpd -f -p 80 -h /www")
	var body string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:18080/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "page-from-container") {
				break
			}
		}
	}
	if !strings.Contains(body, "page-from-container") {
		t.Fatalf("published port 18080 answered %q", body)
	}
	if distroHasIPv6 {
		// localhost may resolve to ::1 first (Windows' forwarding does).
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://[::1]:18080/")
		if err != nil {
			t.Fatalf("published port 18080 over IPv6: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "page-from-container") {
			t.Fatalf("published port 18080 over IPv6 answered %q", b)
		}
	}
	in.Docker("stop", "-t", "1", "web")
	waitFor(t, "port 18080 to close", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:18080", time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	in.Docker("rm", "web")
	in.Docker("run", "-d", "--name", "web2", "-p", "18081:80", "busybox:local", "sleep", "300")
	waitFor(t, "port 18081 to open", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:18081", time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// Shutdown undoes everything: link, NAT rules, forwarding, listeners.
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := netlink.LinkByName("ddinit0"); err == nil {
		t.Fatal("the veth ddinit0 was left behind")
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter"} {
			out, err := exec.Command(tool, "-w", "-t", table, "-S").CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v %s", tool, err, out)
			}
			if strings.Contains(string(out), "ddinit") {
				t.Fatalf("NAT rules left in %s's %s table:\n%s", tool, table, out)
			}
		}
	}
	if after, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(after) != string(forwardBefore) {
		t.Fatalf("ip_forward was %q, is %q", forwardBefore, after)
	}
	for k, v := range ipv6Sysctls() {
		if old, ok := ipv6Before[k]; ok && old != v {
			t.Fatalf("net.ipv6.conf.%s was %q, is %q after shutdown", k, old, v)
		}
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:18081", time.Second); err == nil {
		c.Close()
		t.Fatal("a published port stayed open after shutdown")
	}
	if m := harness.HostMounts(t, in.RunDir, in.DataDir); len(m) > 0 {
		t.Fatalf("mounts left:\n%s", strings.Join(m, "\n"))
	}
}

// ipv6Sysctls reads the distro's IPv6 settings ddinit may change: the
// forwarding switch and every interface's forwarding and accept_ra.
func ipv6Sysctls() map[string]string {
	m := map[string]string{}
	files, _ := filepath.Glob("/proc/sys/net/ipv6/conf/*/*")
	for _, f := range files {
		switch filepath.Base(f) {
		case "forwarding", "accept_ra", "disable_ipv6":
			if b, err := os.ReadFile(f); err == nil {
				m[filepath.Base(filepath.Dir(f))+"/"+filepath.Base(f)] = string(b)
			}
		}
	}
	return m
}

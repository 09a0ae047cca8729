package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/network"
	"github.com/vishvananda/netns"
)

// buildUDPEcho builds the UDP echo server (testdata/udpecho), static, to
// copy into a busybox container (whose nc has no UDP).
func buildUDPEcho(t *testing.T) string {
	t.Helper()
	echo := filepath.Join(t.TempDir(), "udpecho")
	build := exec.Command("go", "build", "-o", echo, "./testdata/udpecho")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the UDP server: %v %s", err, out)
	}
	return echo
}

// udpEcho sends one datagram to addr from a socket dial makes and
// returns the reply ("" when none came within 300 ms).
func udpEcho(dial func(network, addr string) (net.Conn, error), addr string) string {
	c, err := dial("udp", addr)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write([]byte("hello"))
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		return ""
	}
	return string(b[:n])
}

// engineNet is the instance's engine network namespace, for a test to
// dial in or listen in as a process of the namespace that is no
// container's.
func engineNet(t *testing.T, in *harness.Instance) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", in.Pid1()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// upInEngine waits until something answers on addr inside the engine's
// namespace (a TCP connect, or a UDP echo) and returns when it did.
func upInEngine(t *testing.T, ns netns.NsHandle, proto, addr string, within time.Duration) time.Time {
	t.Helper()
	dial := func(proto, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return network.DialIn(ctx, ns, proto, addr)
	}
	harness.WaitUntil(t, within, proto+" "+addr+" up in the engine's namespace", func() bool {
		if proto == "udp" {
			return udpEcho(dial, addr) != ""
		}
		c, err := dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return time.Now()
}

// hostListener is /status's entry for a listener of the engine's
// namespace at listen (proto tcp or udp), if any.
func hostListener(in *harness.Instance, proto, listen string) (control.HostListener, bool) {
	st := in.Status()
	if st.Reach == nil {
		return control.HostListener{}, false
	}
	for _, l := range st.Reach.Listeners {
		if l.Proto == proto && l.Listen == listen {
			return l, true
		}
	}
	return control.HostListener{}, false
}

// What a host-network container listens on answers on the distro's
// loopback, same family and port, within a second of listening inside:
// TCP on 127.0.0.1 and [::1], UDP on 0.0.0.0; a listener of the
// namespace that is no container's is never forwarded; a port the distro
// holds is reported and left to the distro's own server; the setting
// turns it off and on; the ports are free within a second of the
// container's end.
func TestHostNetworkListenersReachTheDistro(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	ipv6 := false
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		ipv6 = true
	}
	// The distro's own server, there first, on a port the container will
	// want too.
	own, err := net.Listen("tcp", "127.0.0.1:18605")
	if err != nil {
		t.Fatal(err)
	}
	ownServer := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "distro-own") })}
	go ownServer.Serve(own)
	t.Cleanup(func() { ownServer.Close() })

	ns := engineNet(t, in)
	// A listener of the namespace that no container owns (as one started
	// with ddinit enter): never forwarded.
	var stranger net.Listener
	if err := network.InNamespace(ns, func() { stranger, err = net.Listen("tcp", "127.0.0.1:18604") }); err != nil || stranger == nil {
		t.Fatalf("listen in the engine's namespace: %v", err)
	}
	defer stranger.Close()
	go func() {
		for {
			c, err := stranger.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	script := "mkdir /www && echo host-web > /www/index.html && { httpd -f -p 127.0.0.1:18601 -h /www & "
	if ipv6 {
		script += "httpd -f -p [::1]:18602 -h /www & "
	}
	script += "exec /udpecho 0.0.0.0:18603; }"
	in.Docker("create", "--name", "hostnet", "--network", "host", "busybox:local", "sh", "-c", script)
	in.Docker("cp", buildUDPEcho(t), "hostnet:/udpecho")
	in.Docker("start", "hostnet")

	up := upInEngine(t, ns, "tcp", "127.0.0.1:18601", 20*time.Second)
	answers(t, "127.0.0.1:18601", "host-web", time.Until(up.Add(time.Second)))
	t.Logf("127.0.0.1:18601 answered in the distro within %s of answering inside", time.Since(up).Round(time.Millisecond))
	if ipv6 {
		up := upInEngine(t, ns, "tcp", "[::1]:18602", 20*time.Second)
		answers(t, "[::1]:18602", "host-web", time.Until(up.Add(time.Second)))
		if !refused("127.0.0.1:18602") {
			t.Fatal("a [::1] listener answers on the distro's 127.0.0.1")
		}
	}
	up = upInEngine(t, ns, "udp", "127.0.0.1:18603", 20*time.Second)
	harness.WaitUntil(t, time.Until(up.Add(time.Second)), "the UDP echo on the distro's 127.0.0.1:18603", func() bool {
		return udpEcho(net.Dial, "127.0.0.1:18603") == "echo: hello"
	})

	// A server started in the container later (docker exec: the same
	// container) on a port the distro holds: reported, and the distro's
	// own server still answers there.
	in.Docker("exec", "-d", "hostnet", "httpd", "-f", "-p", "18605", "-h", "/www")
	// (httpd -p PORT listens on [::], both families: the distro's
	// 127.0.0.1 is taken, its [::1] not.)
	taken := func() bool {
		for _, l := range in.Status().Reach.Listeners {
			if strings.HasSuffix(l.Listen, ":18605") && l.Distro == "" && strings.Contains(l.Reason, "127.0.0.1:18605") && strings.Contains(l.Reason, "taken") {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !taken(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the taken port is not in /status: %+v", in.Status().Reach)
		}
	}
	if body, err := httpGet("127.0.0.1:18605"); err != nil || body != "distro-own" {
		t.Fatalf("the distro's own server on its port answered %q, %v", body, err)
	}
	out, err := in.CLI("status")
	if err != nil || !strings.Contains(out, "127.0.0.1:18601") || !strings.Contains(out, "taken") {
		t.Fatalf("ddinit status does not list the forwards: %v\n%s", err, out)
	}
	// Nothing of the namespace's own (the stranger, ddinit's DNS
	// forwarder, dockerd's) is forwarded or even listed.
	for _, l := range in.Status().Reach.Listeners {
		if !strings.Contains(l.Name, "hostnet") {
			t.Errorf("a listener of no host-network container in /status: %+v", l)
		}
	}
	if !refused("127.0.0.1:18604") {
		t.Fatal("a listener of the namespace that is no container's answers in the distro")
	}

	// Off: gone within a second; on: back.
	if code, body := in.PutSettings(`{"generation": 0, "hostNetworkPorts": false}`); code != http.StatusOK {
		t.Fatalf("hostNetworkPorts false: %d %s", code, body)
	}
	harness.WaitUntil(t, time.Second, "the forward to end with the setting off", func() bool { return refused("127.0.0.1:18601") })
	if code, body := in.PutSettings(`{"generation": 1, "hostNetworkPorts": true}`); code != http.StatusOK {
		t.Fatalf("hostNetworkPorts true: %d %s", code, body)
	}
	answers(t, "127.0.0.1:18601", "host-web", 2*time.Second)

	// The container's end frees the distro's ports within a second.
	in.Docker("kill", "hostnet")
	killed := time.Now()
	harness.WaitUntil(t, time.Second, "the distro's ports to be free", func() bool {
		free := refused("127.0.0.1:18601") && udpEcho(net.Dial, "127.0.0.1:18603") == ""
		if ipv6 {
			free = free && refused("[::1]:18602")
		}
		return free
	})
	t.Logf("the ports were free %s after docker kill returned", time.Since(killed).Round(time.Millisecond))
	if body, err := httpGet("127.0.0.1:18605"); err != nil || body != "distro-own" {
		t.Fatalf("the distro's own server after the container's end answered %q, %v", body, err)
	}
}

// containerIP is a container's address on a network.
func containerIP(t *testing.T, in *harness.Instance, container, net string) string {
	t.Helper()
	ip := strings.TrimSpace(in.Docker("inspect", "-f", "{{(index .NetworkSettings.Networks \""+net+"\").IPAddress}}", container))
	if ip == "" {
		t.Fatalf("%s has no address on %s: %s", container, net, in.Docker("inspect", "-f", "{{json .State}} {{json .NetworkSettings.Networks}}", container))
	}
	return ip
}

// containerRoute is /status's entry for a subnet of a container network.
func containerRoute(in *harness.Instance, subnet string) (control.ContainerRoute, bool) {
	st := in.Status()
	if st.Reach == nil {
		return control.ContainerRoute{}, false
	}
	for _, r := range st.Reach.Routes {
		if r.Subnet == subnet {
			return r, true
		}
	}
	return control.ContainerRoute{}, false
}

// vpnLink makes a link with addr (a prefix): the kernel routes its
// subnet through it, as a VPN's interface would. Removed when t ends.
func vpnLink(t *testing.T, name, addr string) func() {
	t.Helper()
	ip := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	// A veth pair, both ends here: not every kernel has dummy links.
	ip("link", "add", name, "type", "veth", "peer", "name", name+"p")
	remove := func() { exec.Command("ip", "link", "del", name).Run() }
	t.Cleanup(remove)
	ip("addr", "add", addr, "dev", name)
	ip("link", "set", name+"p", "up")
	ip("link", "set", name, "up")
	return remove
}

// The distro reaches containers by their addresses, on the default bridge
// and on a user network, on both engine packs; docker's isolation between
// networks stays; a network whose subnet the distro already routes (a
// VPN's) is not routed and /status says why, and one the distro comes to
// route later is withdrawn and comes back when that route goes; after an
// idle stop and wake, and after a live switch, container addresses
// answer again.
func TestContainerIPsReachTheDistro(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, pack := range []string{harness.PackISO, harness.Pack2010ISO} {
		t.Run(filepath.Base(pack), func(t *testing.T) {
			latest := pack == harness.PackISO
			o := harness.Options{Pack: pack}
			if latest {
				o.Extra = []string{"--idle-stop", "3s"}
			}
			in := harness.Start(t, o)
			in.WaitPing(60 * time.Second)
			in.ImportBusybox()
			web := func(name string, flags ...string) {
				args := append([]string{"run", "-d", "--name", name}, flags...)
				args = append(args, "busybox:local", "sh", "-c", "mkdir -p /www && echo page-"+name+" > /www/index.html && exec httpd -f -p 80 -h /www")
				in.Docker(args...)
			}
			web("onbridge")
			answers(t, containerIP(t, in, "onbridge", "bridge")+":80", "page-onbridge", 20*time.Second)
			in.Docker("network", "create", "--subnet", "10.211.3.0/24", "usernet")
			web("onuser", "--network", "usernet")
			userIP := containerIP(t, in, "onuser", "usernet")
			answers(t, userIP+":80", "page-onuser", 20*time.Second)
			if r, ok := containerRoute(in, "10.211.3.0/24"); !ok || !r.Routed || r.Network != "usernet" {
				t.Fatalf("/status route of usernet: %+v %v", r, ok)
			}
			// Docker's isolation between its networks still holds.
			if out, err := in.DockerErr("exec", "onbridge", "wget", "-T", "2", "-qO-", "http://"+userIP+"/"); err == nil {
				t.Fatalf("a container on the default bridge reached one on usernet: %q", out)
			}

			// A VPN's route there first: not routed, said why.
			vpnLink(t, "ddinit-vpn1", "10.212.0.1/16")
			in.Docker("network", "create", "--subnet", "10.212.7.0/24", "vpnnet")
			harness.WaitUntil(t, 5*time.Second, "vpnnet reported as not routed", func() bool {
				r, ok := containerRoute(in, "10.212.7.0/24")
				return ok && !r.Routed && strings.Contains(r.Reason, "10.212.0.0/16")
			})
			if out, _ := exec.Command("ip", "route", "get", "10.212.7.2").CombinedOutput(); !strings.Contains(string(out), "ddinit-vpn1") {
				t.Fatalf("the VPN's route no longer wins: %s", out)
			}

			// A VPN's route that comes later wins; ours comes back when it goes.
			in.Docker("network", "create", "--subnet", "10.213.7.0/24", "latenet")
			web("onlate", "--network", "latenet")
			lateIP := containerIP(t, in, "onlate", "latenet")
			answers(t, lateIP+":80", "page-onlate", 20*time.Second)
			gone := vpnLink(t, "ddinit-vpn2", "10.213.0.1/16")
			harness.WaitUntil(t, 2*time.Second, "latenet's route withdrawn", func() bool {
				r, ok := containerRoute(in, "10.213.7.0/24")
				out, _ := exec.Command("ip", "route", "show", "10.213.7.0/24").CombinedOutput()
				return ok && !r.Routed && strings.Contains(r.Reason, "10.213.0.0/16") && !strings.Contains(string(out), network.HostLink)
			})
			gone()
			answers(t, lateIP+":80", "page-onlate", 5*time.Second)
			if out, err := in.CLI("status"); err != nil || !strings.Contains(out, "vpnnet") || !strings.Contains(out, "not routed") {
				t.Fatalf("ddinit status does not list the networks: %v\n%s", err, out)
			}
			if !latest {
				return
			}

			// An idle stop and a wake: containers started after it answer.
			in.Docker("rm", "-f", "onbridge", "onuser", "onlate")
			in.WaitIdle(in.PidNS(), 30*time.Second)
			web("afterwake", "--network", "usernet")
			answers(t, containerIP(t, in, "afterwake", "usernet")+":80", "page-afterwake", 20*time.Second)
			in.Docker("rm", "-f", "afterwake")

			// A live switch: the restart-policy container answers at its
			// address again.
			web("keeper", "--restart", "always")
			answers(t, containerIP(t, in, "keeper", "bridge")+":80", "page-keeper", 20*time.Second)
			if out, err := in.CLI("pack", "use", "--live", harness.TestPack(t, "pack2")); err != nil || !strings.Contains(out, "switched in") {
				t.Fatalf("ddinit pack use --live: %v\n%s", err, out)
			}
			// (Restarted by its policy: running, then on its network.)
			harness.WaitUntil(t, 30*time.Second, "keeper to run again with an address", func() bool {
				out, _ := in.DockerErr("inspect", "-f", "{{.State.Running}} {{.NetworkSettings.Networks.bridge.IPAddress}}", "keeper")
				f := strings.Fields(out)
				return len(f) == 2 && f[0] == "true"
			})
			answers(t, containerIP(t, in, "keeper", "bridge")+":80", "page-keeper", 20*time.Second)
		})
	}
}

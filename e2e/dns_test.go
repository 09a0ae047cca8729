package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// The DNS tests' world: a "distro" network namespace whose only route
// (its default) leads to a "Windows host" namespace. Nothing in it reaches
// beyond this machine, so no test query can leave it; the machine's own
// resolver file and routes are never touched.
const (
	winAddr     = "198.51.100.1" // the Windows host, as the distro reaches it
	distroAddr  = "198.51.100.2" // the distro's own address
	nsForwarder = "100.64.249.2" // ddinit's forwarder: the namespace's end of the link
)

type dnsWorld struct {
	t           *testing.T
	distro, win string // the namespaces' paths
}

func newDNSWorld(t *testing.T) *dnsWorld {
	t.Helper()
	w := &dnsWorld{t: t, distro: "/run/netns/ddinit-e2e-distro", win: "/run/netns/ddinit-e2e-win"}
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	for _, n := range []string{"ddinit-e2e-distro", "ddinit-e2e-win"} {
		exec.Command("ip", "netns", "del", n).Run() // a crashed run's
		sh("netns", "add", n)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
		sh("-n", n, "link", "set", "lo", "up")
	}
	sh("link", "add", "ddinit-e2e-d", "netns", "ddinit-e2e-distro", "type", "veth", "peer", "name", "ddinit-e2e-w", "netns", "ddinit-e2e-win")
	sh("-n", "ddinit-e2e-distro", "addr", "add", distroAddr+"/24", "dev", "ddinit-e2e-d")
	sh("-n", "ddinit-e2e-win", "addr", "add", winAddr+"/24", "dev", "ddinit-e2e-w")
	sh("-n", "ddinit-e2e-distro", "link", "set", "ddinit-e2e-d", "up")
	sh("-n", "ddinit-e2e-win", "link", "set", "ddinit-e2e-w", "up")
	sh("-n", "ddinit-e2e-distro", "route", "add", "default", "via", winAddr)
	return w
}

// in runs fn on a thread inside the namespace at path (sockets it makes
// stay there).
func (w *dnsWorld) in(path string, fn func()) {
	w.t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		w.t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		w.t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		w.t.Fatal(err)
	}
	defer netns.Set(orig)
	fn()
}

// serveHTTP answers every GET on addr, in the namespace at path, with body.
func (w *dnsWorld) serveHTTP(path, addr, body string) {
	w.t.Helper()
	var l net.Listener
	var err error
	w.in(path, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		w.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, body) })}
	go srv.Serve(l)
	w.t.Cleanup(func() { srv.Close() })
}

// dnsmasq starts a dnsmasq in the distro's namespace, reading no file of
// the machine's, on listen, with args saying what it answers.
func (w *dnsWorld) dnsmasq(listen string, args ...string) *exec.Cmd {
	w.t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		w.t.Fatal("dnsmasq is missing (make deps installs dnsmasq-base)")
	}
	argv := append([]string{"--net=" + w.distro, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address=" + listen, "-u", "root", "--pid-file="}, args...)
	cmd := exec.Command("nsenter", argv...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	w.t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	// Up once it listens (it binds before it serves).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var c net.Conn
		w.in(w.distro, func() { c, _ = net.DialTimeout("tcp", net.JoinHostPort(listen, "53"), 200*time.Millisecond) })
		if c != nil {
			c.Close()
			return cmd
		}
		select {
		case <-done:
			w.t.Fatalf("dnsmasq on %s exited: %s", listen, out.String())
		default:
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("dnsmasq on %s does not answer: %s", listen, out.String())
		}
	}
}

// query asks server (port 53), from the distro's namespace, one question
// over UDP, and waits up to 10 s for the answer.
func (w *dnsWorld) query(server, name string, qtype uint16) *dns.Msg {
	w.t.Helper()
	var c net.Conn
	var err error
	w.in(w.distro, func() { c, err = net.Dial("udp", net.JoinHostPort(server, "53")) })
	if err != nil {
		w.t.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	co := &dns.Conn{Conn: c}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := co.WriteMsg(q); err != nil {
		w.t.Fatal(err)
	}
	r, err := co.ReadMsg()
	if err != nil {
		w.t.Fatalf("asking %s for %s: %v", server, name, err)
	}
	return r
}

// squat binds 0.0.0.0:53 (UDP) in the distro's namespace, as a distro's
// own dnsmasq or pi-hole does, and never answers.
func (w *dnsWorld) squat() {
	w.t.Helper()
	var fd int
	var err error
	w.in(w.distro, func() {
		if fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0); err != nil {
			return
		}
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: 53})
	})
	if err != nil {
		w.t.Fatalf("bind 0.0.0.0:53 in the distro: %v", err)
	}
	w.t.Cleanup(func() { syscall.Close(fd) })
}

// resolverFile makes the distro's resolver file as WSL has it: a symlink
// to a file that is replaced by rename. It returns the symlink.
func resolverFile(t *testing.T, servers ...string) string {
	t.Helper()
	dir := t.TempDir()
	link := filepath.Join(dir, "resolv.conf")
	replaceResolver(t, link, servers...)
	if err := os.Symlink(filepath.Join(dir, "wsl-resolv.conf"), link); err != nil {
		t.Fatal(err)
	}
	return link
}

func replaceResolver(t *testing.T, link string, servers ...string) {
	t.Helper()
	dir := filepath.Dir(link)
	body := "# This file was automatically generated by WSL.\nsearch corp\n"
	for _, s := range servers {
		body += "nameserver " + s + "\n"
	}
	tmp := filepath.Join(dir, "wsl-resolv.conf.new")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "wsl-resolv.conf")); err != nil {
		t.Fatal(err)
	}
}

// nameserversHere fails the test unless every nameserver in a container's
// resolver file is an address of this machine: dockerd falls back to
// public servers when it finds only loopback ones, and no test query may
// leave the machine.
func nameserversHere(t *testing.T, resolv string, allowed ...string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(resolv, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			n++
			if !slicesContains(allowed, f[1]) {
				t.Fatalf("a container's resolver file names %s, not an address of this machine's test world:\n%s", f[1], resolv)
			}
		}
	}
	if n == 0 {
		t.Fatalf("a container's resolver file names no nameserver:\n%s", resolv)
	}
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Containers resolve names as the distro does, through ddinit's forwarder:
// a resolver on the distro's loopback (beside a program bound to
// 0.0.0.0:53), followed when WSL replaces the file, SERVFAIL when no server
// answers; and host.docker.internal and gateway.docker.internal reach the
// Windows host and the distro, however the user sets DNS.
func TestNamesResolveAsTheDistroDoes(t *testing.T) {
	requireEnvironment(t)
	w := newDNSWorld(t)
	w.squat()
	corp := w.dnsmasq("127.0.0.53", "--host-record=intranet.corp,10.20.30.40", "--local=/corp/")
	resolv := resolverFile(t, "127.0.0.53")
	w.serveHTTP(w.win, winAddr+":8181", "hello from windows")
	w.serveHTTP(w.distro, "0.0.0.0:8282", "hello from the distro")

	in := start(t, options{netns: w.distro, extra: []string{"--resolv-conf", resolv}})
	in.waitPing(60 * time.Second)
	in.importBusybox()

	// The default bridge, a user network (dockerd's embedded DNS asks the
	// forwarder) and a compose service.
	out := in.docker("run", "--rm", "busybox:local", "sh", "-c", "cat /etc/resolv.conf; echo ---; nslookup intranet.corp")
	resolvConf, lookup, _ := strings.Cut(out, "---")
	nameserversHere(t, resolvConf, nsForwarder)
	if !strings.Contains(resolvConf, "search corp") || !strings.Contains(lookup, "10.20.30.40") {
		t.Fatalf("on the default bridge:\n%s", out)
	}
	in.docker("network", "create", "dnsnet")
	out = in.docker("run", "--rm", "--network", "dnsnet", "busybox:local", "sh", "-c", "cat /etc/resolv.conf; echo ---; nslookup intranet.corp")
	resolvConf, lookup, _ = strings.Cut(out, "---")
	nameserversHere(t, resolvConf, "127.0.0.11")
	if !strings.Contains(lookup, "10.20.30.40") {
		t.Fatalf("on a user network:\n%s", out)
	}
	project := t.TempDir()
	os.WriteFile(filepath.Join(project, "docker-compose.yml"), []byte("version: \"3\"\nservices:\n  app:\n    image: busybox:local\n    command: sh -c \"nslookup intranet.corp\"\n"), 0o644)
	compose := exec.Command("docker-compose", "-p", "dnstest", "run", "--rm", "app")
	compose.Dir = project
	compose.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.sock)
	if b, err := compose.CombinedOutput(); err != nil || !strings.Contains(string(b), "10.20.30.40") {
		t.Fatalf("a compose service: %v\n%s", err, b)
	}

	// WSL replaces the file (a VPN connects): a running container resolves
	// the VPN's names within 2 s, nothing restarted.
	in.docker("run", "-d", "--name", "resident", "busybox:local", "sleep", "3600")
	vpn := w.dnsmasq("127.0.0.54", "--host-record=vpn.corp,10.50.60.70", "--local=/corp/")
	replaceResolver(t, resolv, "127.0.0.54")
	took := within(t, 2*time.Second+time.Second, "a running container to resolve the VPN's name", func() bool {
		out, _ := in.dockerErr("exec", "resident", "sh", "-c", "nslookup vpn.corp")
		return strings.Contains(out, "10.50.60.70")
	})
	t.Logf("the VPN's names resolved %s after the file was replaced (each try is a docker exec)", took)

	// The Windows host and the distro, by name.
	if out := in.docker("run", "--rm", "busybox:local", "sh", "-c", "wget -qO- http://host.docker.internal:8181/"); out != "hello from windows" {
		t.Fatalf("host.docker.internal: %q", out)
	}
	if out := in.docker("run", "--rm", "busybox:local", "sh", "-c", "wget -qO- http://gateway.docker.internal:8282/"); out != "hello from the distro" {
		t.Fatalf("gateway.docker.internal: %q", out)
	}

	// The distro's default route changes (a VPN takes it): the name
	// follows, with no restart.
	if r := w.query(nsForwarder, "host.docker.internal", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != winAddr {
		t.Fatalf("host.docker.internal: %v", r.Answer)
	}
	if out, err := exec.Command("ip", "-n", "ddinit-e2e-distro", "route", "replace", "default", "via", "198.51.100.3").CombinedOutput(); err != nil {
		t.Fatalf("change the distro's default route: %v %s", err, out)
	}
	within(t, 3*time.Second, "host.docker.internal to follow the distro's new default route", func() bool {
		r := w.query(nsForwarder, "host.docker.internal", dns.TypeA)
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "198.51.100.3"
	})
	if r := w.query(nsForwarder, "host.docker.internal", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA of host.docker.internal: %s %v (want NOERROR, no answer)", dns.RcodeToString[r.Rcode], r.Answer)
	}
	exec.Command("ip", "-n", "ddinit-e2e-distro", "route", "replace", "default", "via", winAddr).Run()

	// Every upstream stopped (queries to them now reach the program on
	// 0.0.0.0:53, which never answers): SERVFAIL, quickly, not a hang —
	// timed with one query from the distro, and seen by a container.
	corp.Process.Kill()
	vpn.Process.Kill()
	start := time.Now()
	if r := w.query(nsForwarder, "vpn.corp", dns.TypeA); r.Rcode != dns.RcodeServerFailure || time.Since(start) > 3*time.Second {
		t.Fatalf("with every nameserver stopped, after %s: %s", time.Since(start), dns.RcodeToString[r.Rcode])
	}
	t.Logf("SERVFAIL %s after the query, every nameserver stopped", time.Since(start).Round(time.Millisecond))
	if out, _ := in.dockerErr("exec", "resident", "sh", "-c", "nslookup vpn.corp"); !strings.Contains(out, "SERVFAIL") {
		t.Fatalf("a container's lookup with every nameserver stopped:\n%s", out)
	}
	var st struct {
		DNS struct {
			Listen      []string `json:"listen"`
			Servers     []string `json:"servers"`
			Answered    uint64   `json:"answered"`
			Failed      uint64   `json:"failed"`
			LastFailure *struct {
				Name string `json:"name"`
			} `json:"lastFailure"`
		} `json:"dns"`
	}
	within(t, 3*time.Second, "/status to show the forwarder's failure", func() bool {
		_, body := in.get(http.MethodGet, "/status")
		return json.Unmarshal([]byte(body), &st) == nil && st.DNS.LastFailure != nil && st.DNS.LastFailure.Name == "vpn.corp."
	})
	if len(st.DNS.Servers) != 1 || st.DNS.Servers[0] != "127.0.0.54" || st.DNS.Answered == 0 || st.DNS.Failed == 0 {
		t.Fatalf("/status dns: %+v", st.DNS)
	}

	// The user names their own DNS (a server that answers NXDOMAIN for
	// everything): the two names still resolve, through /etc/hosts.
	w.dnsmasq(distroAddr, "--address=/#/")
	out = in.docker("run", "--rm", "--dns", distroAddr, "busybox:local", "sh", "-c",
		"cat /etc/resolv.conf; echo ---; wget -qO- http://host.docker.internal:8181/; echo; wget -qO- http://gateway.docker.internal:8282/")
	resolvConf, got, _ := strings.Cut(out, "---")
	nameserversHere(t, resolvConf, distroAddr)
	if !strings.Contains(got, "hello from windows") || !strings.Contains(got, "hello from the distro") {
		t.Fatalf("with --dns %s:\n%s", distroAddr, out)
	}
	if code, body := in.putSettings(fmt.Sprintf(`{"generation": 0, "daemonJSON": {"dns": [%q]}}`, distroAddr)); code != 200 {
		t.Fatalf("settings with daemon.json dns: %d %s", code, body)
	}
	in.waitPing(60 * time.Second)
	out = in.docker("run", "--rm", "busybox:local", "sh", "-c",
		"cat /etc/resolv.conf; echo ---; nslookup intranet.corp; wget -qO- http://host.docker.internal:8181/; echo; wget -qO- http://gateway.docker.internal:8282/")
	resolvConf, got, _ = strings.Cut(out, "---")
	nameserversHere(t, resolvConf, distroAddr)
	if !strings.Contains(got, "NXDOMAIN") || !strings.Contains(got, "hello from windows") || !strings.Contains(got, "hello from the distro") {
		t.Fatalf("with daemon.json dns %s:\n%s", distroAddr, out)
	}
}

func netDialTimeout(network, addr string) (net.Conn, error) {
	return net.DialTimeout(network, addr, 200*time.Millisecond)
}

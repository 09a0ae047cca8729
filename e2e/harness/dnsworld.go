package harness

import (
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
	WinAddr     = "198.51.100.1" // the Windows host, as the distro reaches it
	DistroAddr  = "198.51.100.2" // the distro's own address
	NSForwarder = "100.64.249.2" // ddinit's forwarder: the namespace's end of the link
)

// DNSWorld is that world: start ddinit in it with Options.Netns = Distro.
type DNSWorld struct {
	t testing.TB
	// Distro and Win are the namespaces' paths.
	Distro, Win string
}

// NewDNSWorld makes the world's two namespaces (removed when t ends; one
// world at a time on a machine: their names are fixed).
func NewDNSWorld(t testing.TB) *DNSWorld {
	t.Helper()
	w := &DNSWorld{t: t, Distro: "/run/netns/ddinit-e2e-distro", Win: "/run/netns/ddinit-e2e-win"}
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
	sh("-n", "ddinit-e2e-distro", "addr", "add", DistroAddr+"/24", "dev", "ddinit-e2e-d")
	sh("-n", "ddinit-e2e-win", "addr", "add", WinAddr+"/24", "dev", "ddinit-e2e-w")
	sh("-n", "ddinit-e2e-distro", "link", "set", "ddinit-e2e-d", "up")
	sh("-n", "ddinit-e2e-win", "link", "set", "ddinit-e2e-w", "up")
	sh("-n", "ddinit-e2e-distro", "route", "add", "default", "via", WinAddr)
	return w
}

// In runs fn on a thread inside the namespace at path (sockets it makes
// stay there).
func (w *DNSWorld) In(path string, fn func()) {
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

// ServeText answers every GET on addr, in the namespace at path, with
// body.
func (w *DNSWorld) ServeText(path, addr, body string) {
	w.t.Helper()
	var l net.Listener
	var err error
	w.In(path, func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		w.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, body) })}
	go srv.Serve(l)
	w.t.Cleanup(func() { srv.Close() })
}

// Dnsmasq starts a dnsmasq in the distro's namespace, reading no file of
// the machine's, on listen, with args saying what it answers.
func (w *DNSWorld) Dnsmasq(listen string, args ...string) *exec.Cmd {
	w.t.Helper()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		w.t.Fatal("dnsmasq is missing (make deps installs dnsmasq-base)")
	}
	argv := append([]string{"--net=" + w.Distro, "dnsmasq", "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
		"--listen-address=" + listen, "-u", "root", "--pid-file="}, args...)
	cmd := exec.Command("nsenter", argv...)
	out := &SyncBuffer{}
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
		w.In(w.Distro, func() { c, _ = net.DialTimeout("tcp", net.JoinHostPort(listen, "53"), 200*time.Millisecond) })
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

// Query asks server (port 53), from the distro's namespace, one question
// over UDP, and waits up to 10 s for the answer.
func (w *DNSWorld) Query(server, name string, qtype uint16) *dns.Msg {
	w.t.Helper()
	var c net.Conn
	var err error
	w.In(w.Distro, func() { c, err = net.Dial("udp", net.JoinHostPort(server, "53")) })
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

// Squat binds 0.0.0.0:53 (UDP) in the distro's namespace, as a distro's
// own dnsmasq or pi-hole does, and never answers.
func (w *DNSWorld) Squat() {
	w.t.Helper()
	var fd int
	var err error
	w.In(w.Distro, func() {
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

// ResolverFile makes the distro's resolver file as WSL has it: a symlink
// to a file that is replaced by rename. It returns the symlink.
func ResolverFile(t testing.TB, servers ...string) string {
	t.Helper()
	dir := t.TempDir()
	link := filepath.Join(dir, "resolv.conf")
	ReplaceResolver(t, link, servers...)
	if err := os.Symlink(filepath.Join(dir, "wsl-resolv.conf"), link); err != nil {
		t.Fatal(err)
	}
	return link
}

// ReplaceResolver replaces the file ResolverFile's link points at, by
// rename, as WSL does.
func ReplaceResolver(t testing.TB, link string, servers ...string) {
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

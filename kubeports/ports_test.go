package kubeports

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// echo serves TCP on an ephemeral loopback port, answering each line with
// name and the line: who answers tells where a connection went.
func echo(t *testing.T, name string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				io.WriteString(c, name+":"+string(buf[:n]))
			}()
		}
	}()
	return l
}

// freePort is a loopback port nothing listens on (just now).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ask says hi at addr and returns the answer ("" when nothing answers).
func ask(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hi")
	b, _ := io.ReadAll(c)
	return string(b)
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// A wanted port is served on the loopback and carries connections to its
// target; one no longer wanted closes; a new target is served at once.
func TestPortsOpenAndClose(t *testing.T) {
	log, _ := quietLog()
	apiserver, nodeport := echo(t, "apiserver"), echo(t, "nodeport")
	p := newPorts([]string{"127.0.0.1"}, time.Hour, log)
	defer func() {
		for k := range p.open {
			p.closeKey(k)
		}
	}()
	a, b := freePort(t), freePort(t)
	p.set(map[portKey]target{{"tcp", a}: {Dial: apiserver.Addr().String()}, {"tcp", b}: {Dial: nodeport.Addr().String()}})
	if p.apply() {
		t.Fatal("a free port was left pending")
	}
	if got := ask(t, loopback(a)); got != "apiserver:hi" {
		t.Errorf("port %d answered %q", a, got)
	}
	if got := ask(t, loopback(b)); got != "nodeport:hi" {
		t.Errorf("port %d answered %q", b, got)
	}
	// b goes; a now goes to the other target.
	p.set(map[portKey]target{{"tcp", a}: {Dial: nodeport.Addr().String()}})
	p.apply()
	if got := ask(t, loopback(b)); got != "" {
		t.Errorf("closed port %d answered %q", b, got)
	}
	if got := ask(t, loopback(a)); got != "nodeport:hi" {
		t.Errorf("port %d, moved, answered %q", a, got)
	}
}

// A port another process holds in the distro is never served by it
// through us: reported once, with what to do, tried again, and published
// once free.
func TestPortTakenIsReportedOnce(t *testing.T) {
	log, hook := quietLog()
	apiserver, other := echo(t, "apiserver"), echo(t, "other")
	taken := other.Addr().(*net.TCPAddr).Port
	p := newPorts([]string{"127.0.0.1"}, 10*time.Millisecond, log)
	applied := make(chan map[portKey]target, 16)
	p.applied = func(open map[portKey]target) { applied <- open }
	p.set(map[portKey]target{{"tcp", taken}: {Dial: apiserver.Addr().String(), Owner: "the Kubernetes API server"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for range 3 { // the first pass and two retries
		if open := within(t, applied, "a pass"); len(open) != 0 {
			t.Fatalf("published while taken: %v", open)
		}
	}
	if got := ask(t, loopback(taken)); got != "other:hi" {
		t.Fatalf("the taken port answered %q", got)
	}
	var warnings []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warnings = append(warnings, e.Message)
			if e.Data[logrus.ErrorKey] == nil || !strings.Contains(e.Message, "ss -ltnup 'sport = :"+strconv.Itoa(taken)+"'") {
				t.Errorf("the report names no cause or no way out: %v %q", e.Data, e.Message)
			}
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("reported %d times: %q", len(warnings), warnings)
	}
	other.Close()
	for {
		if open := within(t, applied, "the pass once free"); len(open) == 1 {
			break
		}
	}
	if got := ask(t, loopback(taken)); got != "apiserver:hi" {
		t.Fatalf("once free, the port answered %q", got)
	}
}

// UDP ports carry datagrams both ways; ::1 is served beside 127.0.0.1
// where the distro has it, and left out without a word of warning where
// it has not.
func TestPortsUDPAndIPv6(t *testing.T) {
	log, hook := quietLog()
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			up.WriteTo(append([]byte("dns:"), buf[:n]...), from)
		}
	}()
	p := newPorts([]string{"127.0.0.1", "::1"}, time.Hour, log)
	defer func() {
		for k := range p.open {
			p.closeKey(k)
		}
	}()
	port := freePort(t)
	p.set(map[portKey]target{{"udp", port}: {Dial: up.LocalAddr().String()}, {"tcp", port}: {Dial: echo(t, "web").Addr().String()}})
	p.apply()
	hosts := []string{"127.0.0.1"}
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		l.Close()
		hosts = append(hosts, "::1")
	} else if len(p.open[portKey{"tcp", port}].on) != 1 {
		t.Fatalf("served without IPv6: %v", p.open[portKey{"tcp", port}].on)
	}
	for _, h := range hosts {
		addr := net.JoinHostPort(h, strconv.Itoa(port))
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("q"))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		c.Close()
		if string(buf[:n]) != "dns:q" {
			t.Errorf("udp %s answered %q %v", addr, buf[:n], err)
		}
		if got := ask(t, addr); got != "web:hi" {
			t.Errorf("tcp %s answered %q", addr, got)
		}
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("warned: %s %v", e.Message, e.Data)
		}
	}
}

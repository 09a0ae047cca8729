package hostports

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/internal/testutil"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
)

// newNetns makes a namespace standing for the engine's; the test's own
// is the distro's.
func newNetns(t testing.TB) (netns.NsHandle, string) { return testutil.NewNetns(t) }

// ipv6In says whether [::1] can be bound both in ns and in the test's
// namespace.
func ipv6In(t *testing.T, ns netns.NsHandle) bool {
	ok := distroIPv6() == ""
	network.InNamespace(ns, func() {
		l, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			ok = false
			return
		}
		l.Close()
	})
	return ok
}

// freePort is a port of proto free on host in the test's namespace (just
// now): what a listener in the namespace takes, so that the distro's side
// is free too.
func freePort(t *testing.T, proto, host string) int {
	t.Helper()
	if proto == "udp" {
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoTCP answers each connection's first read with name and what it read.
func echoTCP(l net.Listener, name string) {
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
}

func echoUDP(c net.PacketConn, name string) {
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
}

// listenIn listens on addr in ns, and answers as name.
func listenIn(t *testing.T, ns netns.NsHandle, proto, addr, name string) io.Closer {
	t.Helper()
	var c io.Closer
	var err error
	network.InNamespace(ns, func() {
		if proto == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", addr); err == nil {
				echoUDP(pc, name)
				c = pc
			}
			return
		}
		var l net.Listener
		if l, err = net.Listen(proto, addr); err == nil {
			echoTCP(l, name)
			c = l
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask says hi at addr and returns the answer ("" when nothing answers).
func ask(proto, addr string) string {
	c, err := net.DialTimeout(proto, addr, 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "hi")
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(c, buf, 1)
	return string(buf[:n])
}

// waitState waits, up to 10 s, for a State that ok accepts, and returns
// it with how long it took.
func waitState(t *testing.T, w *Watcher, changed <-chan struct{}, what string, ok func([]control.HostListener) bool) ([]control.HostListener, time.Duration) {
	t.Helper()
	begin := time.Now()
	deadline := time.After(10 * time.Second)
	for {
		if s := w.State(); ok(s) {
			return s, time.Since(begin)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: State is %+v", what, w.State())
		}
	}
}

func find(s []control.HostListener, proto string, port int) []control.HostListener {
	var out []control.HostListener
	for _, h := range s {
		if _, p, _ := net.SplitHostPort(h.Listen); h.Proto == proto && p == strconv.Itoa(port) {
			out = append(out, h)
		}
	}
	return out
}

func servedAt(s []control.HostListener, proto string, port int, distro string) bool {
	return slices.ContainsFunc(find(s, proto, port), func(h control.HostListener) bool { return h.Distro == distro })
}

// helper starts a process that listens on 127.0.0.1:port in the namespace
// at nsPath, and is no container's.
func helper(t *testing.T, nsPath string, port int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperNetns+"="+nsPath, helperAddr+"=127.0.0.1:"+strconv.Itoa(port))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "listening\n" {
		t.Fatalf("the helper says %q", line)
	}
}

// The whole way, in a real namespace: a host-network container's TCP and
// UDP listeners (IPv4 and IPv6) are reached from the distro's loopback; a
// process that is not the container's is not forwarded; a port taken in
// the distro is reported, logged once, and forwarded once free; a
// listener that closes, and a container that dies, take their forwards
// with them within a second; so does Run's end.
func TestForwardsAHostNetworkContainer(t *testing.T) {
	ns, nsPath := newNetns(t)
	v6 := ipv6In(t, ns)
	const id = "c0ffeec0ffeec0ffee"
	tcpPort, udpPort, v6Port, otherPort, takenPort := freePort(t, "tcp", "127.0.0.1"), freePort(t, "udp", "127.0.0.1"),
		freePort(t, "tcp", "127.0.0.1"), freePort(t, "tcp", "127.0.0.1"), freePort(t, "tcp", "127.0.0.1")
	tcp := listenIn(t, ns, "tcp", "127.0.0.1:"+strconv.Itoa(tcpPort), "tcp")
	listenIn(t, ns, "udp", "0.0.0.0:"+strconv.Itoa(udpPort), "udp")
	if v6 {
		listenIn(t, ns, "tcp6", "[::1]:"+strconv.Itoa(v6Port), "tcp6")
	} else {
		t.Log("no IPv6 loopback: [::1] not tried")
	}
	listenIn(t, ns, "tcp", "127.0.0.1:"+strconv.Itoa(takenPort), "taken")
	helper(t, nsPath, otherPort)
	squatter, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(takenPort))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	echoTCP(squatter, "squatter")

	fake := newFakeDocker(t, map[string]fakeContainer{id: {Name: "web", NetworkMode: "host", Pid: 4242}, "b": {Name: "db", NetworkMode: "bridge", Pid: 1}})
	log, hook := quietLog()
	changed := make(chan struct{}, 1)
	tries := make(chan string, 64)
	w := &Watcher{Dial: fake.dial, Namespace: nsPath, Interval: 50 * time.Millisecond, Log: log,
		Procs: func(pid int) ([]int, error) {
			if pid != 4242 {
				return nil, fmt.Errorf("asked for the processes of pid %d", pid)
			}
			return []int{os.Getpid()}, nil
		},
		Changed: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		}}
	w.retryEvery = 200 * time.Millisecond
	w.listen = func(proto, addr string, dial func(context.Context) (net.Conn, error), log logrus.FieldLogger) (io.Closer, error) {
		select {
		case tries <- proto + "/" + addr:
		default:
		}
		return transport.ForwardPort(proto, addr, dial, log)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	local := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	state, _ := waitState(t, w, changed, "the container's listeners", func(s []control.HostListener) bool {
		return servedAt(s, "tcp", tcpPort, local(tcpPort)) && servedAt(s, "udp", udpPort, local(udpPort)) &&
			(!v6 || servedAt(s, "tcp", v6Port, "[::1]:"+strconv.Itoa(v6Port))) && len(find(s, "tcp", takenPort)) == 1
	})
	if got := ask("tcp", local(tcpPort)); got != "tcp:hi" {
		t.Errorf("tcp %s answered %q", local(tcpPort), got)
	}
	if got := ask("udp", local(udpPort)); got != "udp:hi" {
		t.Errorf("udp %s answered %q", local(udpPort), got)
	}
	if v6 {
		if got := ask("tcp", "[::1]:"+strconv.Itoa(v6Port)); got != "tcp6:hi" {
			t.Errorf("tcp [::1]:%d answered %q", v6Port, got)
		}
	}
	// Not the container's: not listed, not forwarded.
	if got := find(state, "tcp", otherPort); len(got) != 0 {
		t.Errorf("another process's socket listed: %+v", got)
	}
	if got := ask("tcp", local(otherPort)); got != "" {
		t.Errorf("another process's socket answered %q in the distro", got)
	}
	for _, h := range state {
		if h.Container != id[:12] || h.Name != "web" {
			t.Errorf("listed as %+v", h)
		}
	}

	// Taken: reported, tried again, logged once, never served by both.
	want := local(takenPort) + " is taken in the distro by another program: not forwarded"
	if got := find(state, "tcp", takenPort)[0]; got.Distro != "" || got.Reason != want {
		t.Errorf("the taken port: %+v", got)
	}
	for n := 0; n < 3; {
		if within(t, tries, "a try of the taken port") == "tcp/"+local(takenPort) {
			n++
		}
	}
	if got := ask("tcp", local(takenPort)); got != "squatter:hi" {
		t.Errorf("the taken port answered %q", got)
	}
	taken := 0
	for _, m := range warnings(hook) {
		if strings.Contains(m, local(takenPort)) {
			taken++
		}
	}
	if taken != 1 {
		t.Errorf("the taken port was warned of %d times: %q", taken, warnings(hook))
	}
	squatter.Close()
	waitState(t, w, changed, "the freed port", func(s []control.HostListener) bool { return servedAt(s, "tcp", takenPort, local(takenPort)) })
	if got := ask("tcp", local(takenPort)); got != "taken:hi" {
		t.Errorf("the freed port answered %q", got)
	}

	// A listener that closes takes its forward with it.
	tcp.Close()
	_, took := waitState(t, w, changed, "the closed listener's forward gone", func(s []control.HostListener) bool { return len(find(s, "tcp", tcpPort)) == 0 })
	if took > time.Second {
		t.Errorf("the closed listener's forward went after %v", took)
	}
	if got := ask("tcp", local(tcpPort)); got != "" {
		t.Errorf("the closed listener's port answered %q", got)
	}

	// A new listener is forwarded within a poll (or so: the machine is busy).
	newPort := freePort(t, "tcp", "127.0.0.1")
	listenIn(t, ns, "tcp", "0.0.0.0:"+strconv.Itoa(newPort), "new")
	_, took = waitState(t, w, changed, "a new listener", func(s []control.HostListener) bool { return servedAt(s, "tcp", newPort, local(newPort)) })
	t.Logf("a new listener was forwarded after %v (poll period %v)", took, w.Interval)
	if got := ask("tcp", local(newPort)); got != "new:hi" {
		t.Errorf("the new listener answered %q", got)
	}

	// The container dies: everything goes.
	fake.die(id)
	_, took = waitState(t, w, changed, "the dead container's forwards gone", func(s []control.HostListener) bool { return len(s) == 0 })
	if took > time.Second {
		t.Errorf("the dead container's forwards went after %v", took)
	}
	if got := ask("udp", local(udpPort)); got != "" {
		t.Errorf("the dead container's UDP port answered %q", got)
	}

	// Started again, then Run ends: closed.
	fake.start(id, fakeContainer{Name: "web", NetworkMode: "host", Pid: 4242})
	waitState(t, w, changed, "the container started again", func(s []control.HostListener) bool { return servedAt(s, "udp", udpPort, local(udpPort)) })
	cancel()
	<-done
	stopped = true
	if got := ask("udp", local(udpPort)); got != "" {
		t.Errorf("after Run, the UDP port answered %q", got)
	}
	if got := ask("tcp", local(newPort)); got != "" {
		t.Errorf("after Run, the TCP port answered %q", got)
	}
}

package hostports

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/network"
	"github.com/vishvananda/netns"
)

// Only the in-use counts of TCP and UDP are compared: the memory figures
// are the machine's and move with any traffic; a file cut short gives
// what it has.
func TestInUseCounts(t *testing.T) {
	for _, tc := range []struct{ name, stat, want string }{
		{"sockstat", "sockets: used 812\nTCP: inuse 7 orphan 0 tw 3 alloc 9 mem 71\nUDP: inuse 2 mem 4\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n", "TCP 7\nUDP 2\n"},
		{"sockstat6", "TCP6: inuse 4\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n", "TCP6 4\nUDP6 1\n"},
		{"the memory moved", "sockets: used 900\nTCP: inuse 7 orphan 0 tw 5 alloc 11 mem 99\nUDP: inuse 2 mem 8\n", "TCP 7\nUDP 2\n"},
		{"cut short", "sockets: used 812\nTCP: inuse 7 orphan 0 tw 3 alloc 9 mem 71\nUDP: in", "TCP 7\n"},
		{"empty", "", ""},
		{"garbage", "TCP:\nUDP: inuse\n: inuse 3\nTCP: 5 inuse\n", ""},
	} {
		if got := string(inUse([]byte(tc.stat), nil)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The counts tell a poll whether to read the sockets; a listener that
// closes while another opens leaves them as they were, and the sockets
// are read whatever the counts within fullEvery: the new listener is
// forwarded and the old one's forward closed within about a second.
func TestListenerSwappedBetweenPollsIsSeen(t *testing.T) {
	ns, nsPath := newNetns(t)
	const id = "c0ffeec0ffeec0ffee"
	first, second := freePort(t, "tcp", "127.0.0.1"), freePort(t, "tcp", "127.0.0.1")
	old := listenIn(t, ns, "tcp", "127.0.0.1:"+strconv.Itoa(first), "first")
	fake := newFakeDocker(t, map[string]fakeContainer{id: {Name: "web", NetworkMode: "host", Pid: 4242}})
	log, _ := quietLog()
	changed := make(chan struct{}, 1)
	w := &Watcher{Dial: fake.dial, Namespace: nsPath, Interval: 50 * time.Millisecond, Log: log,
		Procs: func(int) ([]int, error) { return []int{os.Getpid()}, nil },
		Changed: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	local := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	waitState(t, w, changed, "the first listener", func(s []control.HostListener) bool {
		return servedAt(s, "tcp", first, local(first))
	})
	before := sockstatIn(t, ns)
	// Swapped within microseconds: a poll every 50 ms almost never falls
	// between the two.
	var err error
	network.InNamespace(ns, func() {
		old.Close()
		var l net.Listener
		if l, err = net.Listen("tcp", local(second)); err == nil {
			echoTCP(l, "second")
			t.Cleanup(func() { l.Close() })
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := sockstatIn(t, ns); after != before {
		t.Logf("the counts moved (%q → %q): this run does not show the full read", before, after)
	}
	_, took := waitState(t, w, changed, "the second listener, the first gone", func(s []control.HostListener) bool {
		return servedAt(s, "tcp", second, local(second)) && len(find(s, "tcp", first)) == 0
	})
	if took > fullEvery+time.Second {
		t.Errorf("the swap was seen after %v; want within about %v", took, fullEvery)
	}
	if got := ask("tcp", local(second)); got != "second:hi" {
		t.Errorf("%s answered %q", local(second), got)
	}
}

// sockstatIn is ns's in-use counts.
func sockstatIn(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	c, err := openSockCounts(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := c.read(nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

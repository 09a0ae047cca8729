package network

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// A server on a namespace's own loopback is reached by a socket made in
// that namespace, and by nothing on the outside's loopback.
func TestDialInReachesTheNamespacesLoopback(t *testing.T) {
	ns, l := func() (netns.NsHandle, net.Listener) {
		ns, leave := enterNewNetns(t)
		defer leave()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ns, l
	}()
	defer ns.Close()
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "inside")
			c.Close()
		}
	}()
	addr := l.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialIn(ctx, ns, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s in the namespace: %v", addr, err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "inside" {
		t.Fatalf("read %q", b)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s answered on the outside's loopback", addr)
	}
	// The thread that dialled is back outside: a dial from any goroutine
	// now is the outside's.
	own, _ := netns.Get()
	defer own.Close()
	if own.Equal(ns) {
		t.Fatal("a thread was left in the namespace")
	}
}

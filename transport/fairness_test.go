package transport

import (
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// One peer that opens connection after connection and keeps them holds a
// quarter of the forwarder's slots; another peer is still served.
func TestOnePeerCannotTakeEveryConnection(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.Out = io.Discard
	release := make(chan struct{})
	f := &Forwarder{Listener: l, MaxConns: 8, Log: quiet, Handle: func(ctx context.Context, c net.Conn) {
		defer c.Close()
		c.Write([]byte("hello\n"))
		select {
		case <-release:
		case <-ctx.Done():
		}
	}}
	done := make(chan struct{})
	go func() { f.Serve(context.Background()); close(done) }()
	defer func() { close(release); l.Close(); <-done }()

	// served reports whether a connection from the local address from is
	// greeted (kept), or closed at once (refused).
	served := func(from string) (net.Conn, bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 6)
		_, err = io.ReadFull(c, b)
		return c, err == nil
	}
	kept := 0
	for range 8 {
		if c, ok := served("127.0.0.2"); ok {
			kept++
			defer c.Close()
		}
	}
	if kept != 2 {
		t.Fatalf("one peer holds %d of 8 connections; want 2", kept)
	}
	for _, other := range []string{"127.0.0.3", "127.0.0.4"} {
		c, ok := served(other)
		if !ok {
			t.Fatalf("%s was refused while another peer held its share", other)
		}
		defer c.Close()
	}
	if got := PeerKey(mustDial(t, l.Addr().String())); got != "tcp/127.0.0.1" {
		t.Errorf("PeerKey of a TCP connection: %q", got)
	}
}

func mustDial(t *testing.T, addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A unix peer is its process.
func TestPeerKeyOfAUnixPeer(t *testing.T) {
	sock := t.TempDir() + "/s"
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := PeerKey(c), "unix/"+strconv.Itoa(os.Getpid())+"/"+strconv.Itoa(os.Getuid()); got != want {
		t.Fatalf("PeerKey %q, want %q", got, want)
	}
}

// A listener limited per peer refuses one peer past its share and serves
// another; a connection closed gives its place back.
func TestLimitPerPeer(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.Out = io.Discard
	l := LimitPerPeer(inner, 8, quiet)
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			c.Write([]byte("hello\n"))
			accepted <- c
		}
	}()
	defer func() {
		l.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	greeted := func(from string) (net.Conn, bool) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(c, make([]byte, 6))
		return c, err == nil
	}
	n := 0
	for range 4 {
		if _, ok := greeted("127.0.0.2"); ok {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("one peer got %d of 8; want 2", n)
	}
	if _, ok := greeted("127.0.0.3"); !ok {
		t.Fatal("another peer was refused")
	}
	// The server closes one of the first peer's: it may connect again.
	(<-accepted).Close()
	if _, ok := greeted("127.0.0.2"); !ok {
		t.Fatal("a place given back was not taken again")
	}
}

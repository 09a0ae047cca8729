package transport

import (
	"io"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A real AF_VSOCK round trip and peer filtering. It needs vsock loopback
// (the vsock_loopback module): this machine's kernel cannot connect to
// CID 1, so here it skips; the qemu guest of make vm-test runs it.
func TestRealVsockLoopback(t *testing.T) {
	a := Addr{Scheme: "vsock", Port: 61990}
	raw, err := Listen(a)
	if err != nil {
		t.Skipf("no AF_VSOCK listener here (%v); the qemu guest runs this test", err)
	}
	local := Addr{Scheme: "vsock", Host: "1", Port: a.Port}
	probe, err := Dial(local, 500*time.Millisecond)
	if err != nil {
		raw.Close()
		t.Skipf("vsock loopback to CID 1 is unavailable here (%v); the qemu guest runs this test", err)
	}
	probe.Close()
	if c, err := raw.Accept(); err == nil {
		c.Close()
	}
	raw.Close()
	// One listener per policy, closed after: a filter keeps accepting (and
	// refusing) until its listener closes.
	for i, allow := range []bool{false, true} {
		a := Addr{Scheme: "vsock", Port: 61991 + uint32(i)}
		raw, err := Listen(a)
		if err != nil {
			t.Fatal(err)
		}
		l := Filter(raw, a, PeerPolicy{AllowLocal: allow}, logrus.New())
		got := make(chan string, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				got <- "accept error"
				return
			}
			b, _ := io.ReadAll(c)
			c.Write([]byte("echo:" + string(b)))
			c.Close()
			got <- string(b)
		}()
		c, err := Dial(Addr{Scheme: "vsock", Host: "1", Port: a.Port}, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		c.(interface{ CloseWrite() error }).CloseWrite()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		reply, _ := io.ReadAll(c)
		c.Close()
		if allow && string(reply) != "echo:hello" {
			t.Fatalf("allowed local peer got %q", reply)
		}
		if !allow && len(reply) != 0 {
			t.Fatalf("a local peer was served without being allowed: %q", reply)
		}
		if allow {
			if s := <-got; s != "hello" {
				t.Fatalf("server read %q", s)
			}
		}
		raw.Close()
	}

}

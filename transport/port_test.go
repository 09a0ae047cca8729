package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// A TCP port carries each connection to its target both ways; a UDP port
// each client's datagrams and the replies; a port something holds is an
// error naming EADDRINUSE, and nothing of ours listens there.
func TestForwardPort(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	// The targets: a TCP echo, a UDP echo.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
	dialTo := func(network, addr string) func(ctx context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}

	tcp, err := ForwardPort("tcp", "127.0.0.1:0", dialTo("tcp", tl.Addr().String()), log)
	if err != nil {
		t.Fatal(err)
	}
	addr := tcp.Addr().String()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		t.Fatalf("through the TCP port: %q %v", got, err)
	}
	// Taken: a second listener on the same port is refused.
	if again, err := ForwardPort("tcp", addr, dialTo("tcp", tl.Addr().String()), log); !errors.Is(err, syscall.EADDRINUSE) {
		if again != nil {
			again.Close()
		}
		t.Fatalf("a second forward on %s: %v, want EADDRINUSE", addr, err)
	}
	// Closing ends the connection it carried and frees the port.
	tcp.Close()
	if _, err := c.Read(got); err == nil {
		t.Error("a connection outlived its port's close")
	}
	c.Close()
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the closed port still answers")
	}

	udpPort, err := ForwardPort("udp", "127.0.0.1:0", dialTo("udp", ul.LocalAddr().String()), log)
	if err != nil {
		t.Fatal(err)
	}
	defer udpPort.Close()
	u, err := net.Dial("udp", udpPort.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(10 * time.Second))
	u.Write([]byte("hello"))
	buf := make([]byte, 16)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "HELLO" {
		t.Fatalf("through the UDP port: %q %v", buf[:n], err)
	}

	if _, err := ForwardPort("sctp", "127.0.0.1:0", nil, log); err == nil {
		t.Error("an sctp port was made")
	}
}

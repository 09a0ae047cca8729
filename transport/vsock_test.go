package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestParse(t *testing.T) {
	good := map[string]string{
		"unix:///run/ddinit/docker.sock": "unix:///run/ddinit/docker.sock",
		"tcp://127.0.0.1:2375":           "tcp://127.0.0.1:2375",
		"vsock://2:4000":                 "vsock://2:4000",
		"vsock://:4000":                  "vsock://:4000",
	}
	for in, want := range good {
		a, err := Parse(in)
		if err != nil || a.String() != want {
			t.Errorf("%s: %v %v", in, a, err)
		}
	}
	for _, bad := range []string{"/run/x.sock", "unix://rel.sock", "tcp://0.0.0.0:1", "vsock://:50002", "vsock://x:1", "http://x"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}

func TestListenReplacesStaleSocketButNotLiveOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	a, _ := Parse("unix://" + path)
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(a); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A dead process's socket file: the listener is gone, the file stays.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	l2, err := Listen(a)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file was replaced: %v", err)
	}
}

// A client that half-closes still gets the whole reply.
func TestForwarderPassesHalfClose(t *testing.T) {
	dir := t.TempDir()
	target, _ := net.Listen("unix", filepath.Join(dir, "target.sock"))
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		c.Write([]byte(strings.ToUpper(string(b))))
		c.Close()
	}()
	a, _ := Parse("unix://" + filepath.Join(dir, "front.sock"))
	l, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{Listener: l, Log: logrus.New(), Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(dir, "target.sock"))
	}}
	go f.Serve(context.Background())
	defer l.Close()
	c, err := net.Dial("unix", a.Path)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello through the forwarder"))
	c.(*net.UnixConn).CloseWrite()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "HELLO THROUGH THE FORWARDER" {
		t.Fatalf("reply %q %v", reply, err)
	}
}

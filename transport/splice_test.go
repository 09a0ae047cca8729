package transport

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// connPair is a connected pair of net (client, server) on a listener
// of network at addr.
func connPair(t *testing.T, network, addr string) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

// copyStream carries every byte, in order, from one kind of socket to
// another (through the kernel where it can, through a buffer where it
// cannot), and ends at the source's end.
func TestCopyStreamCarriesEveryByte(t *testing.T) {
	dir := t.TempDir()
	pairs := map[string]func() (net.Conn, net.Conn){
		"unix": func() (net.Conn, net.Conn) {
			return connPair(t, "unix", filepath.Join(dir, "u"+time.Now().Format("150405.000000000")))
		},
		"tcp": func() (net.Conn, net.Conn) { return connPair(t, "tcp", "127.0.0.1:0") },
		"pipe": func() (net.Conn, net.Conn) {
			a, b := net.Pipe()
			t.Cleanup(func() { a.Close(); b.Close() })
			return a, b
		},
	}
	payload := make([]byte, 8<<20+12345) // not a multiple of any chunk
	rand.Read(payload)
	want := sha256.Sum256(payload)
	for _, from := range []string{"unix", "tcp", "pipe"} {
		for _, to := range []string{"unix", "tcp", "pipe"} {
			t.Run(from+"-to-"+to, func(t *testing.T) {
				writer, src := pairs[from]()
				dst, reader := pairs[to]()
				go func() {
					writer.Write(payload)
					writer.Close()
				}()
				got := make(chan [32]byte, 1)
				go func() {
					h := sha256.New()
					io.Copy(h, reader)
					var sum [32]byte
					copy(sum[:], h.Sum(nil))
					got <- sum
				}()
				n, err := copyStream(dst, src)
				if err != nil || n != int64(len(payload)) {
					t.Fatalf("copyStream: %d bytes, %v; want %d", n, err, len(payload))
				}
				dst.Close()
				if sum := <-got; !bytes.Equal(sum[:], want[:]) {
					t.Fatal("the bytes that arrived are not the ones sent")
				}
			})
		}
	}
}

// A deadline on the source ends a copy that waits on it, as it ends a
// Read.
func TestCopyStreamHonoursDeadlines(t *testing.T) {
	_, src := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	dst, _ := connPair(t, "unix", filepath.Join(t.TempDir(), "d"))
	src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := make(chan error, 1)
	go func() { _, err := copyStream(dst, src); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a copy past its source's deadline ended without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a copy past its source's deadline still waits")
	}
}

// Between unix sockets the bytes go through the kernel's pipe, not a
// buffer: the path the forwarders' throughput depends on is the one
// taken.
func TestUnixSocketsAreSpliced(t *testing.T) {
	writer, src := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	dst, reader := connPair(t, "unix", filepath.Join(t.TempDir(), "d"))
	go func() {
		writer.Write(bytes.Repeat([]byte("x"), 1<<20))
		writer.Close()
	}()
	go io.Copy(io.Discard, reader)
	rs, _ := src.(*net.UnixConn).SyscallConn()
	ws, _ := dst.(*net.UnixConn).SyscallConn()
	p, err := getPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	n, spliced, err := splice(ws, rs, p)
	if err != nil || !spliced || n != 1<<20 {
		t.Fatalf("splice between unix sockets: %d bytes, spliced %v, %v", n, spliced, err)
	}
}

// aheadConn is a connection some of whose bytes its reader holds.
type aheadConn struct {
	net.Conn
	r *bufio.Reader
}

func (c aheadConn) Read(p []byte) (int, error)           { return c.r.Read(p) }
func (c aheadConn) ReadAhead() (*bufio.Reader, net.Conn) { return c.r, c.Conn }

// From a connection whose reader read ahead (an upgraded stream behind
// an HTTP head), the bytes read ahead go first, then the rest, in order.
func TestCopyStreamSendsWhatWasReadAheadFirst(t *testing.T) {
	writer, src := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	dst, reader := connPair(t, "unix", filepath.Join(t.TempDir(), "d"))
	writer.Write([]byte("HEAD\r\n\r\nfirst-"))
	br := bufio.NewReader(src)
	if line, _ := br.ReadString('\n'); line != "HEAD\r\n" {
		t.Fatalf("read %q", line)
	}
	br.ReadString('\n')
	for br.Buffered() == 0 { // "first-" read ahead with the head
		br.Peek(1)
	}
	go func() {
		writer.Write([]byte("then-the-rest"))
		writer.Close()
	}()
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(reader); got <- string(b) }()
	n, err := copyStream(dst, aheadConn{src, br})
	dst.Close()
	if b := <-got; err != nil || b != "first-then-the-rest" || n != int64(len(b)) {
		t.Fatalf("copied %d bytes, %v: %q arrived", n, err, b)
	}
}

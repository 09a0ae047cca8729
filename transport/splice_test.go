package transport

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
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
	n, spliced, err := splice(ws, rs, p, -1)
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

// CopyN moves exactly n bytes (a message's body) and leaves what follows
// where it was, whether the bytes are read ahead, on the socket, or both,
// through the kernel or a buffer.
func TestCopyNMovesExactlyN(t *testing.T) {
	dir := t.TempDir()
	payload := make([]byte, 3<<20+777)
	rand.Read(payload)
	const next = "GET /next HTTP/1.1\r\n\r\n"
	for _, kind := range []string{"unix", "pipe"} {
		for _, ahead := range []int{0, 100, 3<<20 + 777 + 5} {
			t.Run(fmt.Sprintf("%s-ahead-%d", kind, ahead), func(t *testing.T) {
				var writer, src, dst, reader net.Conn
				if kind == "unix" {
					writer, src = connPair(t, "unix", filepath.Join(dir, fmt.Sprintf("s%d", ahead)))
					dst, reader = connPair(t, "unix", filepath.Join(dir, fmt.Sprintf("d%d", ahead)))
				} else {
					writer, src = net.Pipe()
					dst, reader = net.Pipe()
					t.Cleanup(func() { writer.Close(); src.Close(); dst.Close(); reader.Close() })
				}
				go func() {
					writer.Write(payload)
					writer.Write([]byte(next))
				}()
				br := bufio.NewReaderSize(src, 4<<20)
				if ahead > 0 {
					br.Peek(ahead)
				}
				got := make(chan []byte, 1)
				go func() {
					b := make([]byte, len(payload))
					io.ReadFull(reader, b)
					got <- b
				}()
				n, err := CopyN(dst, aheadConn{src, br}, int64(len(payload)))
				if err != nil || n != int64(len(payload)) {
					t.Fatalf("CopyN: %d bytes, %v; want %d", n, err, len(payload))
				}
				if b := <-got; !bytes.Equal(b, payload) {
					t.Fatal("the bytes that arrived are not the ones sent")
				}
				rest := make([]byte, len(next))
				if _, err := io.ReadFull(br, rest); err != nil || string(rest) != next {
					t.Fatalf("what follows the body: %q, %v", rest, err)
				}
			})
		}
	}
}

// A source that ends early is io.ErrUnexpectedEOF; a destination that
// fails is a *WriteError that says how much was taken from the source,
// so that the rest of the body can still be read off.
func TestCopyNTellsAShortSourceFromAFailedDestination(t *testing.T) {
	dir := t.TempDir()
	writer, src := connPair(t, "unix", filepath.Join(dir, "s"))
	dst, reader := connPair(t, "unix", filepath.Join(dir, "d"))
	go func() {
		writer.Write(make([]byte, 1000))
		writer.Close()
	}()
	go io.Copy(io.Discard, reader)
	n, err := CopyN(dst, src, 5000)
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 1000 {
		t.Fatalf("a short source: %d bytes, %v", n, err)
	}

	writer2, src2 := connPair(t, "unix", filepath.Join(dir, "s2"))
	dst2, reader2 := connPair(t, "unix", filepath.Join(dir, "d2"))
	reader2.Close()
	const size = 8 << 20
	go writer2.Write(make([]byte, size))
	n, err = CopyN(dst2, src2, size)
	var we *WriteError
	if !errors.As(err, &we) {
		t.Fatalf("a closed destination: %d bytes, %v; want a WriteError", n, err)
	}
	if n <= 0 || n > size {
		t.Fatalf("a closed destination: %d bytes taken", n)
	}
	rest, err := io.ReadFull(src2, make([]byte, size-n))
	if err != nil || int64(rest) != size-n {
		t.Fatalf("the rest of the source after a failed write: %d bytes, %v; want %d", rest, err, size-n)
	}
}

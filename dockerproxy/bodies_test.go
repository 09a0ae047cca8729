package dockerproxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bodyEngine is a real net/http server that sums the bodies it is sent
// and sends bodies of the size and framing asked for.
func bodyEngine(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("PUT /sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x %s", n, h.Sum(nil), r.Trailer.Get("X-End"))
	})
	mux.HandleFunc("GET /blob/{mode}/{size}", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.PathValue("size"))
		b := pattern(size)
		if r.PathValue("mode") == "length" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		// Chunked (or, to an HTTP/1.0 request, to the connection's end):
		// in writes of 1 MB, each a chunk.
		for len(b) > 0 {
			n := min(len(b), 1<<20)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	})
	return serveEngine(t, mux)
}

// pattern is n bytes that are not all alike, so that a byte out of place
// changes the sum.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func sumOf(b []byte) string {
	return fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
}

// Bodies of every size and framing, in both directions, arrive byte for
// byte and leave what follows them on the connection in place: the
// sizes either side of the point where a body goes socket to socket in
// the kernel rather than through a buffer, chunks small and large with a
// trailer, a body behind a large head (whose buffer held part of it), a
// body to the connection's end, each followed by a pipelined request.
func TestBodiesArriveWholeAsTheyAreFramed(t *testing.T) {
	sock := serveProxy(t, quietProxy(bodyEngine(t)))
	ping := "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
	conn := dialUnix(t, sock)
	// Against a hang: some 30 MB go through the proxy on this connection,
	// a few seconds under -race, more than dialUnix's 10 s on a loaded
	// machine.
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	br := bufio.NewReader(conn)
	expectPing := func(after string) {
		t.Helper()
		if code, body := readAnswer(t, br, "GET"); code != 200 || body != "OK" {
			t.Fatalf("the request pipelined after %s: %d %q", after, code, body)
		}
	}
	m := int(spliceMin)
	for _, size := range []int{0, 1, 4 << 10, m - 1, m, m + 1, m + 4<<10, 5<<20 + 3} {
		b := pattern(size)
		go func() {
			fmt.Fprintf(conn, "PUT /sum HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n", size)
			conn.Write(b)
			io.WriteString(conn, ping)
		}()
		if code, body := readAnswer(t, br, "PUT"); code != 200 || body != sumOf(b)+" " {
			t.Fatalf("a %d-byte body: %d %q; want %q", size, code, body, sumOf(b))
		}
		expectPing(fmt.Sprintf("a %d-byte body", size))
	}

	chunks := []int{3, m - 1, m, 1 << 20, 7, 3 << 20}
	var all []byte
	go func() {
		io.WriteString(conn, "PUT /sum HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nTrailer: X-End\r\n\r\n")
		for _, n := range chunks {
			fmt.Fprintf(conn, "%x\r\n", n)
			conn.Write(pattern(n))
			io.WriteString(conn, "\r\n")
		}
		io.WriteString(conn, "0\r\nX-End: here\r\n\r\n"+ping)
	}()
	for _, n := range chunks {
		all = append(all, pattern(n)...)
	}
	if code, body := readAnswer(t, br, "PUT"); code != 200 || body != sumOf(all)+" here" {
		t.Fatalf("a chunked body: %d %q; want %q", code, body, sumOf(all)+" here")
	}
	expectPing("a chunked body")

	// A head over the small buffer: the larger one that reads it takes
	// the body's start with it.
	big := pattern(3 << 20)
	go func() {
		fmt.Fprintf(conn, "PUT /sum HTTP/1.1\r\nHost: d\r\nX-Registry-Config: %s\r\nContent-Length: %d\r\n\r\n", strings.Repeat("e", 20<<10), len(big))
		conn.Write(big)
		io.WriteString(conn, ping)
	}()
	if code, body := readAnswer(t, br, "PUT"); code != 200 || body != sumOf(big)+" " {
		t.Fatalf("a body behind a large head: %d %q", code, body)
	}
	expectPing("a body behind a large head")

	for _, mode := range []string{"length", "chunked"} {
		for _, size := range []int{1, m + 1, 5<<20 + 3} {
			fmt.Fprintf(conn, "GET /blob/%s/%d HTTP/1.1\r\nHost: d\r\n\r\n%s", mode, size, ping)
			code, body := readAnswer(t, br, "GET")
			if code != 200 || sumOf([]byte(body)) != sumOf(pattern(size)) {
				t.Fatalf("a %s answer of %d bytes: %d, %d bytes came", mode, size, code, len(body))
			}
			expectPing(fmt.Sprintf("a %s answer of %d bytes", mode, size))
		}
	}

	// To the connection's end: an HTTP/1.0 request's answer.
	last := dialUnix(t, sock)
	fmt.Fprintf(last, "GET /blob/eof/%d HTTP/1.0\r\nHost: d\r\n\r\n", 5<<20+3)
	code, body := readAnswer(t, bufio.NewReader(last), "GET")
	if code != 200 || sumOf([]byte(body)) != sumOf(pattern(5<<20+3)) {
		t.Fatalf("an answer to the connection's end: %d, %d bytes came", code, len(body))
	}
}

type countConn struct {
	net.Conn
	zero *atomic.Int64
}

func (c countConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		c.zero.Add(1)
	}
	return c.Conn.Write(p)
}

// An answer with no body left to copy (a small one sent with its head, a
// 204, a HEAD) costs no empty write(2) on the client: a system call each.
func TestNoEmptyWritesForAnswersWithoutABody(t *testing.T) {
	p := quietProxy(bodyEngine(t))
	b, a := unixPair(t)
	var zero atomic.Int64
	done := make(chan struct{})
	go func() { defer close(done); p.Handle(context.Background(), countConn{a, &zero}) }()
	br := bufio.NewReader(b)
	for i := 0; i < 5; i++ {
		io.WriteString(b, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
		if code, body := readAnswer(t, br, "GET"); code != 200 || body != "OK" {
			t.Fatal(code, body)
		}
	}
	b.Close()
	<-done
	if n := zero.Load(); n != 0 {
		t.Errorf("%d zero-length writes to the client for 5 answers", n)
	}
}

// Bodies of random sizes and framings, some behind a large head, sent in
// random slices and each followed by a pipelined request, on one
// connection: each arrives whole and in order.
func TestRandomBodiesPipelined(t *testing.T) {
	sock := serveProxy(t, quietProxy(bodyEngine(t)))
	conn := dialUnix(t, sock)
	// Against a hang: the 150 bodies take some 10 s under -race, several
	// times that on a loaded machine.
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReader(conn)
	rng := rand.New(rand.NewSource(1))
	sizes := []int{0, 1, 100, 4095, 4096, 60 << 10, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10, 1 << 20, 3<<20 + 5}
	for iter := 0; iter < 150; iter++ {
		hdr := ""
		if rng.Intn(3) == 0 {
			hdr = "X-Registry-Config: " + strings.Repeat("e", rng.Intn(200<<10)) + "\r\n"
		}
		var want []byte
		var msg []byte
		if rng.Intn(2) == 0 {
			want = pattern(sizes[rng.Intn(len(sizes))])
			msg = fmt.Appendf(nil, "PUT /sum HTTP/1.1\r\nHost: d\r\n%sContent-Length: %d\r\n\r\n", hdr, len(want))
			msg = append(msg, want...)
		} else {
			msg = fmt.Appendf(nil, "PUT /sum HTTP/1.1\r\nHost: d\r\n%sTransfer-Encoding: chunked\r\n\r\n", hdr)
			for k := rng.Intn(4); k >= 0; k-- {
				n := sizes[1+rng.Intn(len(sizes)-1)]
				c := pattern(n)
				want = append(want, c...)
				msg = fmt.Appendf(msg, "%x\r\n", n)
				msg = append(append(msg, c...), "\r\n"...)
			}
			msg = append(msg, "0\r\n\r\n"...)
		}
		msg = append(msg, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"...)
		go func(msg []byte, seed int64) {
			r := rand.New(rand.NewSource(seed))
			for len(msg) > 0 {
				n := min(len(msg), 1+r.Intn(300<<10))
				conn.Write(msg[:n])
				msg = msg[n:]
				if r.Intn(4) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}(msg, int64(iter))
		if code, body := readAnswer(t, br, "PUT"); code != 200 || body != sumOf(want)+" " {
			t.Fatalf("iter %d: %d %q want %q", iter, code, body, sumOf(want))
		}
		if code, body := readAnswer(t, br, "GET"); code != 200 || body != "OK" {
			t.Fatalf("iter %d ping: %d %q", iter, code, body)
		}
	}
}

// unixPair is a connected pair of unix sockets.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "pair.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

package dockerproxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
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

package dockerproxy

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// However a sound chunked body is cut into reads, the framing is followed
// to its last byte and no further, and the bytes the copy reads next
// (atLeast) never reach past the body's end, whatever the chunk sizes,
// leading zeros, extensions, blanks before them, or trailers: what
// follows a body on a connection is never taken with it.
func TestChunkFrameNeverReadsPastTheBody(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	sizes := []int{1, 2, 5, 15, 16, 255, 4095, 4096, 32 << 10, 64<<10 + 1}
	for iter := range 400 {
		var b strings.Builder
		for k := rng.Intn(5); k > 0; k-- {
			n := sizes[rng.Intn(len(sizes))]
			line := fmt.Sprintf("%x", n)
			switch rng.Intn(5) {
			case 0:
				line = "000" + line
			case 1:
				line = strings.ToUpper(line) + ";name=value"
			case 2:
				line += " \t;ext"
			}
			b.WriteString(line + "\r\n" + strings.Repeat("x", n) + "\r\n")
		}
		b.WriteString([]string{"0", "000", "0;last"}[rng.Intn(3)] + "\r\n")
		for k := rng.Intn(3); k > 0; k-- {
			b.WriteString("X-Trailer: 1\r\n")
		}
		b.WriteString("\r\n")
		body := []byte(b.String())

		var f chunkFrame
		held, scanned := 0, 0
		for !f.done {
			if held == len(body) {
				t.Fatalf("body %d: all %d bytes read and the framing not at its end", iter, held)
			}
			want := f.atLeast(body[:held])
			if want < 1 || int64(held)+want > int64(len(body)) {
				t.Fatalf("body %d: after %d of %d bytes (state %d) it would read %d", iter, held, len(body), f.state, want)
			}
			// A read takes any part of what was asked for.
			held += 1 + rng.Intn(int(want))
			var err error
			if scanned, err = f.scan(body[:held], scanned); err != nil {
				t.Fatalf("body %d: %v", iter, err)
			}
			if f.done && scanned != len(body) {
				t.Fatalf("body %d: ended after %d of %d bytes", iter, scanned, len(body))
			}
		}
	}
}

// Framing a server could read otherwise is refused wherever the reads
// cut it, and what is passable stops before the fault.
func TestChunkFrameRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		body  string
		sound int // how many bytes come before the fault
	}{
		"a bare LF after a size":     {"5\nhello\r\n0\r\n\r\n", 0},
		"a CR inside a size line":    {"5\r;x\r\nhello\r\n0\r\n\r\n", 0},
		"a size that is not hex":     {"zz\r\nhello\r\n0\r\n\r\n", 0},
		"a size past the bound":      {"2\r\nhi\r\n20000000000\r\n", 7},
		"data not followed by CRLF":  {"5\r\nhelloX\r\n0\r\n\r\n", 8},
		"a bare LF ending a trailer": {"5\r\nhello\r\n0\r\nX: 1\n\r\n", 13},
		"a bare LF ending the body":  {"5\r\nhello\r\n0\r\n\n", 13},
	} {
		body := []byte(c.body)
		for cut := 1; cut <= len(body); cut++ {
			var f chunkFrame
			scanned, err := f.scan(body[:cut], 0)
			if err == nil {
				scanned, err = f.scan(body, scanned)
			}
			if err == nil || f.done {
				t.Fatalf("%s, read in two at %d: accepted", name, cut)
			}
			if pass := f.passable(scanned); pass != c.sound {
				t.Fatalf("%s, read in two at %d: %d bytes passable, want the %d before the fault", name, cut, pass, c.sound)
			}
		}
	}
}

// Streams that stay open and idle (docker events, logs -f: chunked
// answers) hold no copy buffer while they wait: what the proxy's heap
// holds for each is its small readers, not a chunked body's buffer.
func TestIdleChunkedStreamsHoldNoBuffer(t *testing.T) {
	engine, _ := streamingEngine(t)
	sock := serveProxy(t, quietProxy(engine))
	const streams = 200
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	for i := range streams {
		c := dialUnix(t, sock)
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, "GET /events HTTP/1.1\r\nHost: d\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "{}\n" {
			t.Fatalf("stream %d's first event: %q %v", i, line, err)
		}
	}
	// Each stream's heap here is the client's, the proxy's and the stand-in
	// engine's: their readers and writers, a few KB each; a 64 KB buffer
	// held per stream would double it.
	if per := (heap() - before) / streams; per > 48<<10 {
		t.Errorf("each idle stream holds %d KB of heap", per>>10)
	} else {
		t.Logf("each idle stream holds %d KB of heap", per>>10)
	}
}

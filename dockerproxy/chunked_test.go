package dockerproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
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

// scriptedConn is a connection whose reads give a script's pieces, one
// per read (as a socket gives what arrived), and whose writes are kept.
// When a read finds the current segment given whole, waiting(segment) is
// called first: the copy is then waiting for input that has not come.
type scriptedConn struct {
	net.Conn // unused: only Read and Write are called
	segments [][][]byte
	waiting  func(seg int)
	seg      int
	wrote    bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	for c.seg < len(c.segments) && len(c.segments[c.seg]) == 0 {
		if c.waiting != nil {
			c.waiting(c.seg)
		}
		c.seg++
	}
	if c.seg == len(c.segments) {
		return 0, io.EOF
	}
	piece := c.segments[c.seg][0]
	n := copy(p, piece)
	if n == len(piece) {
		c.segments[c.seg] = c.segments[c.seg][1:]
	} else {
		c.segments[c.seg][0] = piece[n:]
	}
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) { return c.wrote.Write(p) }

// A stream's chunk goes out as soon as all of it has come, before the
// copy waits for more: whatever its chunk-size line holds (extensions,
// blanks, which Go's server accepts) and wherever the reads cut it.
// "1;abcdefg\r\nx\r\n": the first read asks for 5 bytes ("1;abc"), the
// next for atLeast = 1+1+2+5 = 9, just what the chunk still holds; a read
// that got all it asked for does not count as the source running dry,
// so the whole chunk waited for the next one.
func TestChunkedStreamChunkNotHeldBack(t *testing.T) {
	for _, c := range []struct{ name, chunk string }{
		{"an extension", "1;abcdefg\r\nx\r\n"},
		{"a longer size and extension", "10;abcdefg\r\n0123456789abcdef\r\n"},
		{"blanks after the size", "1        \r\nx\r\n"},
	} {
		src := &scriptedConn{segments: [][][]byte{{[]byte(c.chunk)}}}
		out := &scriptedConn{}
		src.waiting = func(int) {
			if got := out.wrote.String(); got != c.chunk {
				t.Errorf("%s: waiting for more with %q passed on of the chunk %q", c.name, got, c.chunk)
			}
		}
		err := copyChunked(&sink{conn: out}, bufferedConn{Conn: src, r: bufio.NewReaderSize(src, smallBuffer), behind: true})
		if err == nil {
			t.Errorf("%s: a stream cut off ended without an error", c.name)
		}
	}
}

// soundChunkLine is a chunk-size line for n that Go's server and the
// proxy both read as n: any case, leading zeros (16 digits at most), an
// extension, blanks before the CRLF.
func soundChunkLine(rng *rand.Rand, n int) string {
	line := fmt.Sprintf("%x", n)
	if rng.Intn(2) == 0 {
		line = strings.ToUpper(line)
	}
	if z := rng.Intn(4); z > 0 && len(line)+z <= 16 {
		line = strings.Repeat("0", z) + line
	}
	switch rng.Intn(4) {
	case 0:
		line += ";" + strings.Repeat("e", rng.Intn(12))
	case 1:
		line += `;name="a value"`
	}
	if rng.Intn(3) == 0 {
		line += " \t \t\t  \t"[:1+rng.Intn(8)]
	}
	return line + "\r\n"
}

// cut cuts b into pieces of random sizes, small ones often.
func cut(rng *rand.Rand, b []byte) [][]byte {
	var pieces [][]byte
	for len(b) > 0 {
		var k int
		switch rng.Intn(3) {
		case 0:
			k = 1 + rng.Intn(16)
		case 1:
			k = 1 + rng.Intn(5000)
		default:
			k = 1 + rng.Intn(300<<10)
		}
		k = min(k, len(b))
		pieces = append(pieces, b[:k])
		b = b[k:]
	}
	return pieces
}

// A stream of sound chunks, sent in segments that each end at a chunk's
// end and cut into reads anyhow: whenever the copy waits for more, every
// chunk sent so far has gone out, byte for byte; once the body ends,
// nothing after it was taken (the pipelined request is still to read).
func TestChunkedStreamsPassedOnAsTheyCome(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	sizes := []int{1, 2, 3, 7, 16, 100, 4090, 4096, 16<<10 - 1, 16 << 10, 70 << 10, 256<<10 + 3}
	const next = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
	for iter := range 300 {
		var body []byte
		var segments [][][]byte
		var ends []int // where each segment ends in body
		for k := 1 + rng.Intn(6); k > 0; k-- {
			var seg []byte
			for j := 1 + rng.Intn(3); j > 0; j-- {
				n := sizes[rng.Intn(len(sizes))]
				seg = append(seg, soundChunkLine(rng, n)...)
				seg = append(append(seg, pattern(n)...), "\r\n"...)
			}
			body = append(body, seg...)
			ends = append(ends, len(body))
			segments = append(segments, cut(rng, seg))
		}
		last := []string{"0\r\n\r\n", "000;x\r\n\r\n", "0\r\nX-End: 1\r\nY: 2\r\n\r\n", "0  \r\n\r\n"}[rng.Intn(4)]
		body = append(body, last...)
		segments = append(segments, cut(rng, append([]byte(last), next...)))

		src := &scriptedConn{segments: segments}
		out := &scriptedConn{}
		src.waiting = func(seg int) {
			if seg < len(ends) && !bytes.Equal(out.wrote.Bytes(), body[:ends[seg]]) {
				t.Fatalf("stream %d: waiting for more after %d bytes (%q), with %d passed on", iter, ends[seg], clipQ(body[:ends[seg]]), out.wrote.Len())
			}
		}
		br := bufio.NewReaderSize(src, smallBuffer)
		if err := copyChunked(&sink{conn: out}, bufferedConn{Conn: src, r: br, behind: true}); err != nil {
			t.Fatalf("stream %d: %v", iter, err)
		}
		if !bytes.Equal(out.wrote.Bytes(), body) {
			t.Fatalf("stream %d: %d bytes passed on, not the body's %d", iter, out.wrote.Len(), len(body))
		}
		if rest, _ := io.ReadAll(br); string(rest) != next {
			t.Fatalf("stream %d: %q left after the body", iter, rest)
		}
	}
}

// clipQ is b, its middle left out when long.
func clipQ(b []byte) string {
	if len(b) > 80 {
		return string(b[:40]) + "…" + string(b[len(b)-40:])
	}
	return string(b)
}

// A chunk-size line longer than Go's server reads (4 KB: it refuses the
// body) is refused, as the previous copy refused it (a line past its
// 4 KB reader), however it arrives: here in one piece.
func TestChunkedLongSizeLineRefused(t *testing.T) {
	line := "ffff;" + strings.Repeat("e", 5000) + "\r\n"
	body := line + string(pattern(0xffff)) + "\r\n0\r\n\r\n"
	src := &scriptedConn{segments: [][][]byte{{[]byte(body)}}}
	out := &scriptedConn{}
	err := copyChunked(&sink{conn: out}, bufferedConn{Conn: src, r: bufio.NewReaderSize(src, smallBuffer), behind: true})
	if err == nil || out.wrote.Len() > 0 {
		t.Errorf("a %d-byte chunk-size line: %v, with %d of the body's %d bytes passed on", len(line), err, out.wrote.Len(), len(body))
	}
}

// Framing a server could read otherwise, cut into two reads anywhere, is
// refused by the copy itself, and what went out is what came before the
// fault, no more: sizes that are not sizes (a sign, a 0x, past maxChunk,
// seventeen f's), stray CRs and bare LFs in every place a line ends.
func TestChunkedRefusalsWhereverCut(t *testing.T) {
	for name, c := range map[string]struct {
		body  string
		sound int
	}{
		"an empty size":             {"\r\nhello\r\n0\r\n\r\n", 0},
		"an extension alone":        {";x\r\nhello\r\n0\r\n\r\n", 0},
		"a sign":                    {"+5\r\nhello\r\n0\r\n\r\n", 0},
		"a 0x":                      {"0x5\r\nhello\r\n0\r\n\r\n", 0},
		"an underscore":             {"1_0\r\nhello\r\n0\r\n\r\n", 0},
		"one past maxChunk":         {"1\r\nx\r\n10000000001\r\n", 6},
		"seventeen f's":             {"fffffffffffffffff\r\nx", 0},
		"a CR in an extension":      {"5;a\rb\r\nhello\r\n0\r\n\r\n", 0},
		"a bare CR ending data":     {"5\r\nhello\r0\r\n\r\n", 8},
		"a bare LF ending data":     {"5\r\nhello\n0\r\n\r\n", 8},
		"data running on":           {"5\r\nhello!\r\n0\r\n\r\n", 8},
		"a CR in a trailer":         {"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n", 13},
		"a bare LF after the last":  {"5\r\nhello\r\n0\n\r\n", 10},
		"a bare CR ending the body": {"5\r\nhello\r\n0\r\n\r\r\n", 13},
	} {
		for at := 1; at < len(c.body); at++ {
			src := &scriptedConn{segments: [][][]byte{{[]byte(c.body[:at])}, {[]byte(c.body[at:] + "GET / HTTP/1.1\r\n\r\n")}}}
			out := &scriptedConn{}
			err := copyChunked(&sink{conn: out}, bufferedConn{Conn: src, r: bufio.NewReaderSize(src, smallBuffer), behind: true})
			if err == nil || out.wrote.String() != c.body[:c.sound] {
				t.Errorf("%s, cut at %d: %v, and %q passed on", name, at, err, out.wrote.String())
			}
		}
	}
}

// A sound body that ends early, wherever: the copy says so, and has
// passed on its data as far as it came, its lines only whole.
func TestChunkedCutOffAnywhere(t *testing.T) {
	// The body's pieces: lines and CRLFs go out whole, data as it comes.
	pieces := []struct {
		text string
		data bool
	}{
		{"00A;x=1 \r\n", false}, {"0123456789", true}, {"\r\n", false},
		{"10000000000\r\n", false}, {"abc", true},
	}
	var body string
	for _, p := range pieces {
		body += p.text
	}
	for end := 0; end < len(body); end++ {
		want, at := 0, 0
		for _, p := range pieces {
			switch {
			case end >= at+len(p.text):
				want = at + len(p.text)
			case p.data && end > at:
				want = end
			}
			at += len(p.text)
		}
		src := &scriptedConn{segments: [][][]byte{{[]byte(body[:end])}}}
		out := &scriptedConn{}
		err := copyChunked(&sink{conn: out}, bufferedConn{Conn: src, r: bufio.NewReaderSize(src, smallBuffer), behind: true})
		if !errors.Is(err, io.ErrUnexpectedEOF) || out.wrote.String() != body[:want] {
			t.Errorf("cut off after %d bytes: %v, and %q passed on, want %q", end, err, out.wrote.String(), body[:want])
		}
	}
}

// Over real sockets, with chunks large enough to go socket to socket in
// the kernel: the body arrives byte for byte, and what follows it stays
// on the connection; so too when the source is read through a replaced
// buffer's bytes first (behind: never spliced), and when the sink's
// reader is gone (drain: the body is still read off whole, to its end).
func TestChunkedSplicedDrainedAndBehind(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	const next = "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
	var body []byte
	for _, n := range []int{100, 70 << 10, 5, 300<<10 + 1, 64 << 10, 3} {
		body = append(body, soundChunkLine(rng, n)...)
		body = append(append(body, pattern(n)...), "\r\n"...)
	}
	body = append(body, "0\r\nX-End: 1\r\n\r\n"...)
	msg := append(bytes.Clone(body), next...)
	for _, mode := range []string{"spliced", "behind", "drained", "drained midway"} {
		c, s := unixPair(t)
		first := 0
		if mode == "behind" {
			first = 3000 // the replaced buffer's bytes: a line and some data
		}
		go func(rng *rand.Rand) {
			for b := msg[first:]; len(b) > 0; {
				n := min(len(b), 1+rng.Intn(100<<10))
				if _, err := c.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
			c.(*net.UnixConn).CloseWrite()
		}(rand.New(rand.NewSource(rng.Int63())))
		var src io.Reader = s
		if first > 0 {
			src = &heldFirst{held: bytes.Clone(msg[:first]), r: s}
		}
		from := bufferedConn{Conn: s, r: bufio.NewReaderSize(src, smallBuffer), behind: first > 0}
		outc, peer := unixPair(t)
		got := make(chan []byte, 1)
		switch mode {
		case "drained":
			peer.Close()
			got <- nil
		case "drained midway":
			// The reader goes away within the second chunk's splice.
			go func() { io.CopyN(io.Discard, peer, 100<<10); peer.Close(); got <- nil }()
		default:
			go func() { b, _ := io.ReadAll(peer); got <- b }()
		}
		drained := strings.HasPrefix(mode, "drained")
		out := &sink{conn: outc, drain: drained}
		err := copyChunked(out, from)
		outc.Close()
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if b := <-got; !drained && !bytes.Equal(b, body) {
			t.Errorf("%s: %d bytes arrived of the body's %d", mode, len(b), len(body))
		}
		if drained && out.err == nil {
			t.Errorf("%s: the writes did not fail", mode)
		}
		if rest, _ := io.ReadAll(from.r); string(rest) != next {
			t.Errorf("%s: %q left after the body", mode, clipQ(rest))
		}
	}
}

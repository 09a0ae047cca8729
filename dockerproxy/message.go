package dockerproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/transport"
)

// A message's head is read and parsed, but passed on as the bytes that
// came; its body is copied as it comes too, framing and all, so that
// nothing the proxy does not rewrite is re-encoded or held back.

var errHeadTooLarge = errors.New("message head too large")

// readHead returns the raw head (through the blank line) at the front of
// br, without consuming it; a head that does not fit br's buffer is
// refused.
func readHead(br *bufio.Reader) ([]byte, error) {
	for searched := 0; ; {
		n := br.Buffered()
		b, _ := br.Peek(n) // what is buffered: never blocks, never fails
		if i := bytes.Index(b[max(0, searched-3):], []byte("\r\n\r\n")); i >= 0 {
			return b[:max(0, searched-3)+i+4], nil
		}
		searched = n
		if n == br.Size() {
			return nil, errHeadTooLarge
		}
		if _, err := br.Peek(n + 1); err != nil { // wait for more
			if n == 0 {
				return nil, err // the connection ended between messages
			}
			return nil, fmt.Errorf("%w: %w", errHeadCut, err)
		}
	}
}

// errHeadCut is a head that began and did not end.
var errHeadCut = errors.New("head cut off")

// nothingCame reports a connection that ended (closed, or reset) before
// the first byte of a head.
func nothingCame(err error) bool {
	return !errors.Is(err, errHeadCut) && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))
}

// parseHead reads a head; a request's when request, else a response's.
// Framing that could be read two ways (two lengths, a length and chunked,
// another transfer coding) is refused: the engine must frame the message
// exactly as the proxy does.
func parseHead(raw []byte, request bool) (head, error) {
	h := head{raw: raw, contentLength: -1}
	// Lines end in CRLF, and only there: a bare LF or CR would let the
	// engine split the head where the proxy does not.
	if n := bytes.Count(raw, []byte("\r\n")); bytes.Count(raw, []byte("\n")) != n || bytes.Count(raw, []byte("\r")) != n {
		return h, errors.New("a line ends in a bare LF or CR")
	}
	// One string for the whole head; lines are slices of it.
	text := strings.TrimSuffix(string(raw), "\r\n\r\n")
	firstLine, rest, _ := strings.Cut(text, "\r\n")
	var first [3]string
	n := 0
	for part := range strings.SplitSeq(firstLine, " ") {
		if n == 3 {
			first[2] += " " + part // a reason phrase may hold spaces
			continue
		}
		first[n] = part
		n++
	}
	if n < 2 {
		return h, fmt.Errorf("malformed first line %q", firstLine)
	}
	proto := first[0]
	if request {
		if n != 3 || first[0] == "" || strings.ContainsAny(first[0], "\t:/") || strings.Contains(first[2], " ") {
			return h, fmt.Errorf("malformed request line %q", firstLine)
		}
		h.method, proto = first[0], first[2]
		h.path, _, _ = strings.Cut(first[1], "?")
		if !strings.HasPrefix(h.path, "/") {
			return h, fmt.Errorf("request target %q is not a path", first[1])
		}
		h.route = h.path
		if strings.IndexByte(h.path, '%') >= 0 {
			if decoded, err := url.PathUnescape(h.path); err == nil {
				h.route = decoded
			}
		}
	} else {
		code, err := strconv.Atoi(first[1])
		if err != nil || code < 100 || code > 999 {
			return h, fmt.Errorf("malformed status line %q", firstLine)
		}
		h.status = code
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok || major != 1 {
		return h, fmt.Errorf("not HTTP/1: %q", proto)
	}
	h.close = minor == 0
	if err := h.parseFields(rest, request, minor); err != nil {
		return h, err
	}
	if h.chunked && h.contentLength >= 0 {
		return h, errors.New("both Content-Length and Transfer-Encoding")
	}
	return h, nil
}

// parseFields reads the header lines (rest: the head after its first
// line) for what the proxy needs of them.
func (h *head) parseFields(rest string, request bool, minor int) error {
	for line := range strings.SplitSeq(rest, "\r\n") {
		if rest == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return fmt.Errorf("malformed header line %q", line)
		}
		value = strings.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil || (h.contentLength >= 0 && int64(n) != h.contentLength) {
				return fmt.Errorf("Content-Length %q", value)
			}
			h.contentLength = int64(n)
		case asciiEqualFold(name, "Transfer-Encoding"):
			if !asciiEqualFold(value, "chunked") || h.chunked {
				return fmt.Errorf("Transfer-Encoding %q: only chunked, once, is passed on", value)
			}
			if request && minor == 0 {
				// Go's server (dockerd's) ignores it in HTTP/1.0 and would
				// frame the body otherwise than the proxy.
				return errors.New("Transfer-Encoding in an HTTP/1.0 request")
			}
			h.chunked = true
		case asciiEqualFold(name, "Expect"):
			h.expectContinue = asciiEqualFold(value, "100-continue")
		case asciiEqualFold(name, "Connection"):
			for _, opt := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(opt)) {
				case "close":
					h.close = true
				case "keep-alive":
					h.close = false
				}
			}
		case asciiEqualFold(name, "Content-Type"):
			h.contentType = value
		case request && asciiEqualFold(name, engineclient.InternalHeader):
			h.internal = true
		case request && asciiEqualFold(name, engineclient.ClientHeader):
			h.client = value
		}
	}
	return nil
}

// takeHead parses the raw head at the front of br and takes it off.
func takeHead(br *bufio.Reader, raw []byte, request bool) (head, error) {
	raw = bytes.Clone(raw)
	br.Discard(len(raw))
	return parseHead(raw, request)
}

// asciiEqualFold is strings.EqualFold for ASCII only, as HTTP compares
// header names: "Content-Lengt\u212a" (a Kelvin sign) is not
// Content-Length, though Unicode folds it so.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// withLength is a request head whose body is now length bytes long,
// framed by Content-Length, read whole by the proxy (which answered any
// Expect: 100-continue itself).
func (h head) withLength(length int) []byte {
	return h.edited([]string{"Content-Length", "Transfer-Encoding", "Expect"}, fmt.Sprintf("Content-Length: %d", length))
}

// edited is the head without the fields named drop and with the lines add
// at its end; every other line as it came.
func (h head) edited(drop []string, add ...string) []byte {
	var b bytes.Buffer
	b.Grow(len(h.raw) + 64)
	lines := strings.Split(strings.TrimSuffix(string(h.raw), "\r\n\r\n"), "\r\n")
	for i, line := range lines {
		name, _, _ := strings.Cut(line, ":")
		if i > 0 && slices.ContainsFunc(drop, func(d string) bool { return asciiEqualFold(name, d) }) {
			continue
		}
		b.WriteString(line + "\r\n")
	}
	for _, line := range add {
		b.WriteString(line + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func requestFraming(req head) framing {
	if req.chunked {
		return framing{chunked: true}
	}
	return framing{length: max(req.contentLength, 0)}
}

func responseFraming(req, resp head) framing {
	switch {
	case req.method == http.MethodHead, resp.status/100 == 1, resp.status == http.StatusNoContent, resp.status == http.StatusNotModified:
		return framing{}
	case resp.chunked:
		return framing{chunked: true}
	case resp.contentLength >= 0:
		return framing{length: resp.contentLength}
	}
	return framing{toEOF: true}
}

// streamed reports a body whose end is not known up front: a stream
// (logs -f, events) that can last.
func (f framing) streamed() bool { return f.chunked || f.toEOF }

// sink is where a body goes: a connection. A write that fails ends the
// copy, unless the sink drains: then the rest is read off and dropped
// (a request's body the engine stopped taking is still read off the
// client whole) and err keeps the failed write's error.
type sink struct {
	conn  net.Conn
	drain bool
	err   error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.conn.Write(p)
	}
	if s.err != nil && !s.drain {
		return 0, s.err
	}
	return len(p), nil
}

// spliceMin is the least a body's run of bytes (a length-framed body, a
// chunk) must be, beyond what the reader holds, to go socket to socket
// in the kernel rather than through a buffer: below it the splices' and
// the flush's system calls cost more than the copy they save.
var spliceMin int64 = 64 << 10

// copyN copies n bytes (n < 0: to the source's end) of a body from src.
func (s *sink) copyN(src bufferedConn, n int64) error {
	if n == 0 {
		return nil // not even an empty write: it is a system call
	}
	if s.err == nil && !src.behind && (n < 0 || n-int64(src.r.Buffered()) >= spliceMin) {
		taken, err := transport.CopyN(s.conn, src, n)
		var we *transport.WriteError
		if !errors.As(err, &we) {
			return err
		}
		s.err = we.Err
		if !s.drain {
			return s.err
		}
		if n >= 0 {
			n -= taken
		}
	}
	if n >= 0 && n <= int64(src.r.Buffered()) {
		// Here already: no copy buffer needed.
		b, _ := src.r.Peek(int(n))
		_, err := s.Write(b)
		src.r.Discard(int(n))
		return err
	}
	return copyInto(s, src.r, n)
}

// copyBody copies one body from src to dst as it is framed, byte for
// byte: its bytes socket to socket in the kernel where they can (see
// copyN), a chunked body's framing through src's reader.
func copyBody(dst *sink, src bufferedConn, f framing) error {
	switch {
	case f.chunked:
		return copyChunked(dst, src)
	case f.toEOF:
		return dst.copyN(src, -1)
	}
	return dst.copyN(src, f.length)
}

// copyInto copies n bytes (n < 0: to the end) from br to w through a
// pooled buffer.
func copyInto(w io.Writer, br *bufio.Reader, n int64) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	if n < 0 {
		_, err := io.CopyBuffer(w, br, *bp)
		return err
	}
	m, err := io.CopyBuffer(w, io.LimitReader(br, n), *bp)
	if err == nil && m < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// trailerLine reads one trailer line, without its CRLF; one that ends in
// a bare LF, or holds a CR, is refused (servers read those differently:
// Go's reads a bare LF as a line's end only in some cases).
func trailerLine(src *bufio.Reader) ([]byte, error) {
	t, err := src.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("trailer: %w", err)
	}
	if !crlfLine(t) {
		return nil, fmt.Errorf("%w: a trailer line %q", errBadFraming, t)
	}
	return t[:len(t)-2], nil
}

// errBadFraming is a body whose framing could be read two ways: a bare LF
// where CRLF belongs. It is refused, never passed on.
var errBadFraming = errors.New("malformed chunked body")

// crlfLine reports a line that ends in CRLF and holds no other CR or LF.
func crlfLine(line []byte) bool {
	return bytes.HasSuffix(line, []byte("\r\n")) && bytes.IndexByte(line[:len(line)-2], '\r') < 0
}

// maxChunk bounds a chunk's size: far past any real one, far from
// overflowing what is added to it.
const maxChunk = 1 << 40

// chunkSize reads a chunk-size line (extensions ignored).
func chunkSize(line []byte) (int64, error) {
	sizeText, _, _ := strings.Cut(strings.TrimSpace(string(line)), ";")
	size, err := strconv.ParseUint(strings.TrimSpace(sizeText), 16, 64)
	if err != nil || size > maxChunk {
		return 0, fmt.Errorf("chunk size %q: not a size up to %d", sizeText, int64(maxChunk))
	}
	return int64(size), nil
}

// chunkedReader decodes a chunked body and reads its trailer too, so that
// the next request on the connection starts where it should.
type chunkedReader struct {
	br   *bufio.Reader
	body io.Reader
	done bool
}

func newChunkedReader(br *bufio.Reader) *chunkedReader {
	return &chunkedReader{br: br, body: httputil.NewChunkedReader(br)}
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	n, err := r.body.Read(p)
	if err == io.EOF {
		// The last chunk is read; its trailer lines end at a blank one.
		for {
			line, terr := trailerLine(r.br)
			if terr != nil {
				return n, terr
			}
			if len(line) == 0 {
				break
			}
		}
		r.done = true
	}
	return n, err
}

// withBuildArgs is a build request's head with args (upper-case name →
// value) added to its buildargs in both cases, as tools read either, each
// one the request does not give in either case (the client's own proxy
// arguments win). Only the buildargs parameter the engine reads (the
// first) changes, and in it only the arguments added: every other byte of
// the head is as it came. The head is returned unchanged when nothing is
// added.
func (h head) withBuildArgs(args map[string]string) (head, error) {
	if len(args) == 0 {
		return h, nil
	}
	firstLine, rest, _ := strings.Cut(string(h.raw), "\r\n")
	parts := strings.Split(firstLine, " ")
	if len(parts) != 3 {
		return h, fmt.Errorf("malformed request line %q", firstLine)
	}
	target := parts[1]
	path, query, _ := strings.Cut(target, "?")
	// The first buildargs parameter, as url.ParseQuery (dockerd's
	// FormValue) finds it: its place in the query, and its value.
	at, value, found := -1, "{}", false
	pos := 0
	for param := range strings.SplitSeq(query, "&") {
		name, v, _ := strings.Cut(param, "=")
		if n, err := url.QueryUnescape(name); err == nil && n == "buildargs" && !found {
			decoded, err := url.QueryUnescape(v)
			if err != nil {
				return h, fmt.Errorf("buildargs: %w", err)
			}
			at, value, found = pos, decoded, true
		}
		pos += len(param) + 1
	}
	if strings.TrimSpace(value) == "" {
		value = "{}"
	}
	given := map[string]*string{}
	if err := json.Unmarshal([]byte(value), &given); err != nil || !json.Valid([]byte(value)) || value[skipSpace([]byte(value), 0)] != '{' {
		return h, fmt.Errorf("buildargs is not a JSON object: %s", clip([]byte(value)))
	}
	set := map[string]bool{}
	for name := range given {
		set[strings.ToUpper(name)] = true
	}
	var added []byte
	for _, name := range slices.Sorted(maps.Keys(args)) {
		if set[strings.ToUpper(name)] {
			continue
		}
		for _, n := range []string{name, strings.ToLower(name)} {
			added = append(append(append(append(added, ','), quote(n)...), ':'), quote(args[name])...)
		}
	}
	if len(added) == 0 {
		return h, nil
	}
	b := []byte(value)
	obj := span{skipSpace(b, 0), valueEnd(b, skipSpace(b, 0))}
	if len(objectMembers(b, obj)) == 0 {
		added = added[1:]
	}
	edited, _ := applyPatches(b, []patch{{span{obj.end - 1, obj.end - 1}, added}})
	param := "buildargs=" + url.QueryEscape(string(edited))
	switch {
	case found:
		end := strings.IndexByte(query[at:], '&')
		if end < 0 {
			end = len(query) - at
		}
		query = query[:at] + param + query[at+end:]
	case query == "":
		query = param
	default:
		query += "&" + param
	}
	raw := parts[0] + " " + path + "?" + query + " " + parts[2] + "\r\n" + rest
	return parseHead([]byte(raw), true)
}

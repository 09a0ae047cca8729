package dockerproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// A message's head is read and parsed, but passed on as the bytes that
// came; its body is copied as it comes too, framing and all, so that
// nothing the proxy does not rewrite is re-encoded or held back.

var errHeadTooLarge = errors.New("message head over 64 KB")

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
			if n == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("head cut off: %w", err)
		}
	}
}

// head is a request's or a response's head: the bytes that came, and
// what the proxy needs of them. Parsing only that keeps a request's cost
// to a few microseconds; everything else passes on as it came.
type head struct {
	raw           []byte
	method, path  string // a request's
	status        int    // a response's
	contentLength int64  // -1: none given
	chunked       bool
	close         bool // the connection ends after this message
	contentType   string
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
	lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n\r\n"), "\r\n")
	first := strings.SplitN(lines[0], " ", 3)
	if len(first) < 2 {
		return h, fmt.Errorf("malformed first line %q", lines[0])
	}
	proto := first[0]
	if request {
		if len(first) != 3 || first[0] == "" || strings.ContainsAny(first[0], "\t:/") {
			return h, fmt.Errorf("malformed request line %q", lines[0])
		}
		h.method, proto = first[0], first[2]
		h.path, _, _ = strings.Cut(first[1], "?")
		if !strings.HasPrefix(h.path, "/") {
			return h, fmt.Errorf("request target %q is not a path", first[1])
		}
	} else {
		code, err := strconv.Atoi(first[1])
		if err != nil || code < 100 || code > 999 {
			return h, fmt.Errorf("malformed status line %q", lines[0])
		}
		h.status = code
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok || major != 1 {
		return h, fmt.Errorf("not HTTP/1: %q", proto)
	}
	h.close = minor == 0
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return h, fmt.Errorf("malformed header line %q", line)
		}
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Content-Length"):
			n, err := strconv.ParseUint(value, 10, 63)
			if err != nil || (h.contentLength >= 0 && int64(n) != h.contentLength) {
				return h, fmt.Errorf("Content-Length %q", value)
			}
			h.contentLength = int64(n)
		case strings.EqualFold(name, "Transfer-Encoding"):
			if !strings.EqualFold(value, "chunked") || h.chunked {
				return h, fmt.Errorf("Transfer-Encoding %q: only chunked, once, is passed on", value)
			}
			h.chunked = true
		case strings.EqualFold(name, "Connection"):
			for _, opt := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(opt)) {
				case "close":
					h.close = true
				case "keep-alive":
					h.close = false
				}
			}
		case strings.EqualFold(name, "Content-Type"):
			h.contentType = value
		}
	}
	if h.chunked && h.contentLength >= 0 {
		return h, errors.New("both Content-Length and Transfer-Encoding")
	}
	return h, nil
}

// readRequest reads a request's head off br; its body stays there.
func readRequest(br *bufio.Reader) (head, error) {
	raw, err := readHead(br)
	if err != nil {
		return head{}, err
	}
	raw = bytes.Clone(raw)
	br.Discard(len(raw))
	return parseHead(raw, true)
}

// readResponse reads a response's head off br; its body stays there.
func readResponse(br *bufio.Reader) (head, error) {
	raw, err := readHead(br)
	if err != nil {
		return head{}, err
	}
	raw = bytes.Clone(raw)
	br.Discard(len(raw))
	return parseHead(raw, false)
}

// withLength is a request head whose body is now length bytes long,
// framed by Content-Length.
func (h head) withLength(length int) []byte {
	var b bytes.Buffer
	lines := strings.Split(strings.TrimSuffix(string(h.raw), "\r\n\r\n"), "\r\n")
	for i, line := range lines {
		name, _, _ := strings.Cut(line, ":")
		if i > 0 && (strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "Transfer-Encoding")) {
			continue
		}
		b.WriteString(line + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", length)
	return b.Bytes()
}

// framing is how a message's body ends.
type framing struct {
	length  int64 // >= 0: this many bytes
	chunked bool
	toEOF   bool // until the connection closes
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

// copyBody copies one body from src to dst as it is framed, byte for byte.
func copyBody(dst io.Writer, src *bufio.Reader, f framing, buf []byte) error {
	switch {
	case f.toEOF:
		_, err := io.CopyBuffer(dst, src, buf)
		return err
	case !f.chunked:
		n, err := io.CopyBuffer(dst, io.LimitReader(src, f.length), buf)
		if err == nil && n < f.length {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	// Chunks are gathered into large writes, flushed whenever the source
	// has nothing more at hand, so a stream's chunk still goes out at once.
	w := bufio.NewWriterSize(dst, len(buf))
	defer w.Flush()
	dst = w
	for {
		if src.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		line, err := src.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("chunk size: %w", err)
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
		sizeText, _, _ := strings.Cut(strings.TrimSpace(string(line)), ";")
		size, err := strconv.ParseUint(sizeText, 16, 63)
		if err != nil {
			return fmt.Errorf("chunk size %q: %w", sizeText, err)
		}
		if size == 0 {
			// Trailers, then the blank line that ends the body.
			for {
				t, err := src.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("trailer: %w", err)
				}
				if _, err := dst.Write(t); err != nil {
					return err
				}
				if len(bytes.TrimSpace(t)) == 0 {
					return w.Flush()
				}
			}
		}
		if n, err := io.CopyBuffer(dst, io.LimitReader(src, int64(size)+2), buf); err != nil || n < int64(size)+2 {
			return cmpErr(err, io.ErrUnexpectedEOF)
		}
	}
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

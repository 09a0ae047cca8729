package dockerproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/engineclient"

	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// Limits on what the proxy holds for a client: a create body is a few KB
// (anything larger is refused, not buffered), a head fits a small buffer
// (one up to headBuffer is taken only for a larger one, and one up to
// maxRequestHead, dockerd's own limit, from the budget: a build's
// X-Registry-Config carries every registry's credentials).
const (
	maxCreateBody  = 4 << 20
	headBuffer     = 64 << 10
	maxRequestHead = 1 << 20
	smallBuffer    = 4 << 10
	copyBuffer     = 64 << 10
)

// Deadlines on what a client sends, as Go's net/http server has them
// (ReadHeaderTimeout, IdleTimeout): a client that sends half a head and
// stops, or keeps a connection idle, is closed instead of holding a slot.
// Bodies have none, as dockerd's own server has none: an upload or a
// stream lasts as long as it lasts.
const (
	DefaultHeadTimeout = 10 * time.Second
	DefaultIdleTimeout = 30 * time.Second
	// drainTimeout bounds how long the rest of a request body is read off
	// (and dropped) after an answer that came before it, so that closing
	// the connection does not reset it under the answer.
	drainTimeout = 10 * time.Second
)

// The routes the proxy acts on, matched as dockerd's router matches them:
// on the decoded path, after any version prefix.
var (
	createPath = regexp.MustCompile(`^(/v[0-9.]+)?/containers/create$`)
	startPath  = regexp.MustCompile(`^(/v[0-9.]+)?/containers/([^/]+)/(start|restart)$`)
	buildPath  = regexp.MustCompile(`^(/v[0-9.]+)?/build$`)
)

// Serve accepts until the listener is closed, then waits for the
// connections it serves to end.
func (p *Proxy) Serve(l net.Listener) error {
	f := &transport.Forwarder{Listener: l, Log: p.Log, Handle: p.Handle}
	return f.Serve(context.Background())
}

func (p *Proxy) headTimeout() time.Duration { return cmpOr(p.HeadTimeout, DefaultHeadTimeout) }
func (p *Proxy) dialTimeout() time.Duration { return cmpOr(p.DialTimeout, 10*time.Second) }

// HeldError is a Dial that held the connection for a reason (the engine
// waking, a version-pack switch) and gave up: answered 503 with it.
type HeldError struct{ Reason string }

func (e *HeldError) Error() string          { return e.Reason }
func (p *Proxy) idleTimeout() time.Duration { return cmpOr(p.IdleTimeout, DefaultIdleTimeout) }

func cmpOr(d, otherwise time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return otherwise
}

// warnf logs a warning at most once every 10 s per proxy, saying how many
// were held back: a flood of bad clients must not flood the log.
func (p *Proxy) warnf(fields logrus.Fields, msg string) {
	if ok, held := p.warn.Allow(); ok {
		p.Log.WithFields(fields).WithField("alsoHeldBack", held).Warn(msg)
	}
}

// Buffers are taken when a connection needs them and given back after.
var (
	smallReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, smallBuffer) }}
	copyBuffers  = sync.Pool{New: func() any { b := make([]byte, copyBuffer); return &b }}
)

func newReader(r io.Reader) *bufio.Reader {
	br := smallReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	if br.Size() == smallBuffer {
		br.Reset(nil)
		smallReaders.Put(br)
	}
}

// Handle serves one client connection: request after request, each
// passed on over one engine connection opened for this client.
func (p *Proxy) Handle(ctx context.Context, client net.Conn) {
	c := &conn{p: p, ctx: ctx, client: client, src: client, br: newReader(client), id: newConnID()}
	defer c.close()
	for c.awaitRequest() {
		req, err := c.readRequest()
		if err != nil {
			c.refuseHead(err)
			return
		}
		if !c.exchange(c.fromClient(req)) {
			return
		}
	}
}

func (c *conn) close() {
	if c.late != nil {
		c.late.disarm()
	}
	if c.engine != nil {
		c.engine.Close()
		putReader(c.ebr)
	}
	c.client.Close()
	putReader(c.br)
	if c.bigHead > 0 {
		c.p.budget().Give(c.id, c.bigHead)
	}
}

// fromClient is a request as this proxy passes it on: the markers only
// ddinit's own callers may set are stripped unless the proxy trusts its
// clients, and the proxy's own identity added.
func (c *conn) fromClient(req head) head {
	p := c.p
	if p.Trusted && p.Identity == "" {
		return req
	}
	var drop []string
	if !p.Trusted && (req.internal || req.client != "") {
		drop = append(drop, engineclient.InternalHeader, engineclient.ClientHeader)
		req.internal, req.client = false, ""
	}
	var add []string
	if p.Identity != "" {
		drop = append(drop, engineclient.ClientHeader)
		add = append(add, engineclient.ClientHeader+": "+p.Identity)
	}
	if len(drop) == 0 {
		return req
	}
	edited, err := parseHead(req.edited(drop, add...), true)
	if err != nil {
		return req // cannot be: a parsed head less some lines
	}
	return edited
}

// shrink gives back the buffer taken for a large head as soon as the head
// is off it: what the buffer still holds (the start of a body, the next
// request: at most one read, see cappedReads) is read first by a small
// reader, and a long stream or upload after a large head holds no more
// than any other.
func (c *conn) shrink() {
	if c.bigHead == 0 {
		return
	}
	held, _ := c.br.Peek(c.br.Buffered())
	if len(held) > 0 {
		h := &heldFirst{held: bytes.Clone(held), r: c.src}
		c.src = h
		c.clientHeld = append(c.clientHeld, h)
	}
	c.br = newReader(c.src)
	c.p.budget().Give(c.id, c.bigHead)
	c.bigHead = 0
}

// awaitRequest waits, up to the idle deadline, for the first byte of the
// next request, and then gives its head the head deadline. It reports
// false when the client is gone or was idle too long.
func (c *conn) awaitRequest() bool {
	if c.br.Buffered() == 0 {
		c.client.SetReadDeadline(time.Now().Add(c.p.idleTimeout()))
		if _, err := c.br.Peek(1); err != nil {
			return false
		}
	}
	c.client.SetReadDeadline(time.Now().Add(c.p.headTimeout()))
	return true
}

// errHeadBudget is a large head met while the budget is spent.
var errHeadBudget = errors.New("too many large request heads are being read at once: try again")

// readRequest reads a request's head (its body stays on the connection),
// in a larger buffer when it does not fit the one it has: 64 KB, then up
// to maxRequestHead, taken from the budget and given back once the head
// is parsed.
func (c *conn) readRequest() (head, error) {
	raw, err := readHead(c.br)
	for err == errHeadTooLarge && c.br.Size() < maxRequestHead {
		size := int64(headBuffer)
		if c.br.Size() >= headBuffer {
			size = maxRequestHead
		}
		c.p.budget().Give(c.id, c.bigHead)
		c.bigHead = 0
		if !c.p.budget().Take(c.id, size) {
			c.p.warnf(nil, "request heads over the proxy's memory budget; answered 503")
			return head{}, errHeadBudget
		}
		c.bigHead = size
		c.br = grow(c.br, cappedReads{c.src}, int(size), &c.clientHeld)
		raw, err = readHead(c.br)
	}
	if err != nil {
		return head{}, err
	}
	c.client.SetReadDeadline(time.Time{})
	req, err := takeHead(c.br, raw, true)
	c.shrink()
	return req, err
}

// cappedReads reads at most smallBuffer bytes at a time: a large buffer
// filled through it holds at most that much past the head it was taken
// for, which the small buffer after it can hold.
type cappedReads struct{ r io.Reader }

func (c cappedReads) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), smallBuffer)]) }

// readResponse reads an answer's head off the engine.
func (c *conn) readResponse() (head, error) {
	raw, err := readHead(c.ebr)
	if err == errHeadTooLarge && c.ebr.Size() < headBuffer {
		c.ebr = grow(c.ebr, c.engine, headBuffer, &c.engineHeld)
		raw, err = readHead(c.ebr)
	}
	if err != nil {
		return head{}, err
	}
	return takeHead(c.ebr, raw, false)
}

// grow moves what a full small reader holds into a large one over the
// same source.
func grow(br *bufio.Reader, src io.Reader, size int, helds *[]*heldFirst) *bufio.Reader {
	held, _ := br.Peek(br.Buffered())
	h := &heldFirst{held: bytes.Clone(held), r: src}
	*helds = append(*helds, h)
	big := bufio.NewReaderSize(h, size)
	putReader(br)
	return big
}

// refuseHead answers a head that cannot be read, or just lets go of a
// client that went away or ran out of time.
func (c *conn) refuseHead(err error) {
	var ne net.Error
	switch {
	case err == errHeadTooLarge:
		c.answerError(http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("a request head over %d KB", maxRequestHead>>10))
	case err == errHeadBudget:
		c.answerError(http.StatusServiceUnavailable, err.Error())
	case err == io.EOF || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET):
		// Gone between requests: nobody to answer.
	case errors.As(err, &ne) && ne.Timeout():
		c.p.warnf(logrus.Fields{"after": c.p.headTimeout().String()}, "a client sent part of a request head and stopped; closed")
	default:
		c.answerError(http.StatusBadRequest, "malformed request: "+err.Error())
	}
}

// answerError answers with the proxy's own error and leaves the client
// time to read it before the connection closes.
func (c *conn) answerError(status int, msg string) {
	writeError(c.client, status, msg)
	c.linger()
}

// linger half-closes the connection and reads off what the client still
// sends, for a while: closing with unread bytes would reset the
// connection, and the client could lose the answer it was sent.
func (c *conn) linger() {
	closeWrite(c.client)
	c.client.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.CopyN(io.Discard, c.br, maxCreateBody)
}

// writeError answers as the docker engine does: JSON with a message; a 503
// says when to try again.
func writeError(w io.Writer, status int, msg string) {
	body, _ := json.Marshal(map[string]string{"message": msg})
	extra := ""
	if status == http.StatusServiceUnavailable {
		extra = "Retry-After: 1\r\n"
	}
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nApi-Version: \r\n%s\r\n%s",
		status, http.StatusText(status), len(body), extra, body)
}

// PortTakenError is a published port something else holds.
type PortTakenError struct {
	Container, Addr string
	Err             error
}

func (e *PortTakenError) Error() string {
	// Docker Engine's own wording, which people and tools recognise.
	return fmt.Sprintf("driver failed programming external connectivity on endpoint %s: Bind for %s failed: port is already allocated", e.Container, e.Addr)
}

func (e *PortTakenError) Unwrap() error { return e.Err }

// hijacked reports whether the connection leaves HTTP after this
// response: an upgrade (attach, exec) or docker's raw stream.
func hijacked(resp head) bool {
	if resp.status == http.StatusSwitchingProtocols {
		return true
	}
	streamed := resp.contentType == "application/vnd.docker.raw-stream" || resp.contentType == "application/vnd.docker.multiplexed-stream"
	return streamed && resp.contentLength < 0 && !resp.chunked
}

// bufferedConn reads what its reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
	// behind: the reader's source is more than the connection (what a
	// replaced buffer held, still to be read): see heldFirst.
	behind bool
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ReadAhead gives transport the bytes read ahead and the connection
// itself, so that an upgraded stream or a body is spliced in the
// kernel: only where nothing sits between the two.
func (c bufferedConn) ReadAhead() (*bufio.Reader, net.Conn) {
	if c.behind {
		return c.r, nil
	}
	return c.r, c.Conn
}

// heldFirst reads what a replaced buffer held, then its source: a
// connection's bytes stay in order when its reader's buffer grows or
// shrinks.
type heldFirst struct {
	held []byte
	r    io.Reader
}

func (h *heldFirst) Read(p []byte) (int, error) {
	if len(h.held) > 0 {
		n := copy(p, h.held)
		h.held = h.held[n:]
		return n, nil
	}
	return h.r.Read(p)
}

// drained reports whether every byte the replaced buffers held has been
// read, forgetting those that are: a reader over them then reads its
// connection itself.
func drained(hs *[]*heldFirst) bool {
	*hs = slices.DeleteFunc(*hs, func(h *heldFirst) bool { return len(h.held) == 0 })
	return len(*hs) == 0
}

// clientSide and engineSide are the two connections read through their
// readers.
func (c *conn) clientSide() bufferedConn {
	return bufferedConn{Conn: c.client, r: c.br, behind: !drained(&c.clientHeld)}
}

func (c *conn) engineSide() bufferedConn {
	return bufferedConn{Conn: c.engine, r: c.ebr, behind: !drained(&c.engineHeld)}
}

func (c bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

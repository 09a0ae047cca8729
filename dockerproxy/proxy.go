package dockerproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"sync"
	"time"

	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
)

// Limits on what the proxy reads to rewrite: a create body is a few KB;
// anything larger is refused, not buffered.
const (
	maxCreateBody = 4 << 20
	headBuffer    = 64 << 10
)

// Proxy serves the docker API on a listener and passes it on to the
// engine, rewriting what it is given hooks for.
type Proxy struct {
	// Dial opens a connection to the engine's socket.
	Dial func(ctx context.Context) (net.Conn, error)
	// Translate maps the bind sources of create requests.
	Translate Translator
	// Label, when set, names the label a created container gets with the
	// sources that were rewritten (see RewriteCreate).
	Label string
	// Ports, when set, reserves a container's published ports before its
	// start is passed on.
	Ports PortReserver
	Log   logrus.FieldLogger
}

// PortReserver holds a container's published ports in the distro before
// it starts. Reserve fails, naming the port, when one is taken; release
// gives the ports up again when the start does not happen.
type PortReserver interface {
	Reserve(ctx context.Context, container string) (release func(), err error)
}

var (
	createPath = regexp.MustCompile(`^(/v[0-9]+\.[0-9]+)?/containers/create$`)
	startPath  = regexp.MustCompile(`^(/v[0-9]+\.[0-9]+)?/containers/([^/]+)/(start|restart)$`)
)

// Serve accepts until the listener is closed, then waits for the
// connections it serves to end.
func (p *Proxy) Serve(l net.Listener) error {
	f := &vsock.Forwarder{Listener: l, Log: p.Log, Handle: p.Handle}
	return f.Serve(context.Background())
}

// Handle serves one client connection: request after request, each
// passed on over one engine connection opened for this client.
func (p *Proxy) Handle(ctx context.Context, client net.Conn) {
	defer client.Close()
	br := bufio.NewReaderSize(client, headBuffer)
	var engine net.Conn
	var ebr *bufio.Reader
	defer func() {
		if engine != nil {
			engine.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	var late *lateWatch
	defer func() {
		if late != nil {
			late.disarm()
		}
	}()
	for {
		req, err := readRequest(br)
		switch {
		case errors.Is(err, errHeadTooLarge):
			writeError(client, http.StatusRequestHeaderFieldsTooLarge, err.Error())
			return
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF):
			return
		case err != nil:
			writeError(client, http.StatusBadRequest, "malformed request: "+err.Error())
			return
		}
		if engine == nil {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			engine, err = p.Dial(dctx)
			cancel()
			if err != nil {
				writeError(client, http.StatusBadGateway, "the docker engine is not reachable: "+err.Error())
				return
			}
			ebr = bufio.NewReaderSize(engine, headBuffer)
			late = newLateWatch(slowAnswer, client, br, engine)
		}
		reqBody := &body{br: br, framing: requestFraming(req)}
		release, status, msg := p.prepare(ctx, req, reqBody)
		if status != 0 {
			writeError(client, status, msg)
			// The connection goes on only where the refused request's
			// body is known to be off it.
			if req.close || !reqBody.consumed() {
				return
			}
			continue
		}
		if err := reqBody.send(engine, req, buf); err != nil {
			release(false)
			p.Log.WithError(err).Debug("request not passed to the engine")
			return
		}
		// An answer slow to come (a wait, a pull) can outlast its client.
		late.arm()
		resp, err := readResponse(ebr)
		late.disarm()
		if err != nil {
			release(false)
			writeError(client, http.StatusBadGateway, "the docker engine's answer was cut off: "+err.Error())
			return
		}
		release(resp.status < 300)
		if hijacked(resp) {
			if _, err := client.Write(resp.raw); err == nil {
				vsock.Join(bufferedConn{client, br}, bufferedConn{engine, ebr})
			}
			return
		}
		f := responseFraming(req, resp)
		// A small answer already here goes out with its head, in one write.
		if !f.streamed() && f.length > 0 && f.length <= int64(ebr.Buffered()) && f.length <= 4096 {
			b, _ := ebr.Peek(int(f.length))
			resp.raw = append(resp.raw, b...)
			ebr.Discard(int(f.length))
			f.length = 0
		}
		if _, err := client.Write(resp.raw); err != nil {
			return
		}
		stopWatching := func() {}
		if f.streamed() {
			// A stream can outlast its client: pass a client that goes
			// on to the engine, which then ends the stream.
			stopWatching = watchClient(client, br, engine)
		}
		err = copyBody(client, ebr, f, buf)
		stopWatching()
		if err != nil || req.close || resp.close || f.toEOF {
			return
		}
	}
}

// body is a request's body: passed on raw, or rewritten.
type body struct {
	br        *bufio.Reader
	framing   framing
	rewritten []byte // set when prepare rewrote the body
}

// consumed reads off what is left of a refused request's body, when that
// is small and known, and reports whether none is left.
func (b *body) consumed() bool {
	switch {
	case b.rewritten != nil:
		return len(b.rewritten) <= maxCreateBody
	case b.framing.chunked || b.framing.length > maxCreateBody:
		return false
	}
	n, err := io.CopyN(io.Discard, b.br, b.framing.length)
	return err == nil && n == b.framing.length
}

// reader reads the body as it is framed, decoded (for prepare).
func (b *body) reader() io.Reader {
	if b.framing.chunked {
		return httputil.NewChunkedReader(b.br)
	}
	return io.LimitReader(b.br, b.framing.length)
}

// send passes the request on: its raw head and body, or, when rewritten,
// the head with a new length and the new body.
func (b *body) send(engine net.Conn, req head, buf []byte) error {
	if b.rewritten == nil {
		if _, err := engine.Write(req.raw); err != nil {
			return err
		}
		return copyBody(engine, b.br, b.framing, buf)
	}
	_, err := engine.Write(append(req.withLength(len(b.rewritten)), b.rewritten...))
	return err
}

// slowAnswer is how long an answer may take before the client is watched
// for going away meanwhile: fast answers (most) cost no watch.
const slowAnswer = 50 * time.Millisecond

// lateWatch starts watchClient once an answer has taken d; one per
// connection, its timer re-armed for each request.
type lateWatch struct {
	mu    sync.Mutex
	t     *time.Timer
	d     time.Duration
	armed bool
	stop  func() // the running watch's, or nil
	start func() func()
}

func newLateWatch(d time.Duration, client net.Conn, br *bufio.Reader, engine net.Conn) *lateWatch {
	w := &lateWatch{d: d, start: func() func() { return watchClient(client, br, engine) }}
	w.t = time.AfterFunc(time.Hour, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.armed && w.stop == nil {
			w.stop = w.start()
		}
	})
	w.t.Stop()
	return w
}

func (w *lateWatch) arm() {
	w.mu.Lock()
	w.armed = true
	w.mu.Unlock()
	w.t.Reset(w.d)
}

// disarm stops the timer and any watch it started.
func (w *lateWatch) disarm() {
	w.t.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if w.stop != nil {
		w.stop()
		w.stop = nil
	}
}

// watchClient passes on, while the engine answers, a client that goes
// away or half-closes, as a byte forwarder would: the engine then ends
// what it streams (events, logs -f) instead of streaming to nobody. It
// reads nothing: what the client sends next stays on br. stop ends the
// watch before br is read again.
func watchClient(client net.Conn, br *bufio.Reader, engine net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ne net.Error
		if _, err := br.Peek(1); err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			closeWrite(engine)
		}
	}()
	return func() {
		client.SetReadDeadline(time.Now()) // wakes the Peek
		<-done
		client.SetReadDeadline(time.Time{})
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// prepare rewrites a create request's body and reserves a start's ports.
// It returns what to do once the engine has answered (keep=true: the
// start happened) and, when the request must not go on, the status and
// message to answer with instead.
func (p *Proxy) prepare(ctx context.Context, req head, b *body) (release func(keep bool), status int, msg string) {
	release = func(bool) {}
	if req.method != http.MethodPost {
		return release, 0, ""
	}
	switch {
	case createPath.MatchString(req.path) && p.Translate != nil:
		body, err := io.ReadAll(io.LimitReader(b.reader(), maxCreateBody+1))
		if err != nil {
			return release, http.StatusBadRequest, "reading the create request: " + err.Error()
		}
		if len(body) > maxCreateBody {
			return release, http.StatusRequestEntityTooLarge, fmt.Sprintf("a create request over %d bytes", maxCreateBody)
		}
		b.rewritten = body // read off the connection: passed on from memory
		out, err := RewriteCreate(body, p.Translate, p.Label)
		if err != nil {
			return release, http.StatusBadRequest, err.Error()
		}
		b.rewritten = out
	case p.Ports != nil:
		m := startPath.FindStringSubmatch(req.path)
		if m == nil {
			return release, 0, ""
		}
		undo, err := p.Ports.Reserve(ctx, m[2])
		if err != nil {
			var refused *PortTakenError
			if errors.As(err, &refused) {
				return release, http.StatusInternalServerError, err.Error()
			}
			// The engine answers best about a container it cannot find.
			p.Log.WithError(err).Debug("ports not reserved before a start")
			return release, 0, ""
		}
		release = func(keep bool) {
			if !keep {
				undo()
			}
		}
	}
	return release, 0, ""
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
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// writeError answers as the docker engine does: JSON with a message.
func writeError(w io.Writer, status int, msg string) {
	body, _ := json.Marshal(map[string]string{"message": msg})
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nApi-Version: \r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
}

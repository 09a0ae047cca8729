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
	"strconv"
	"strings"
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
			ebr = bufio.NewReader(engine)
		}
		release, status, msg := p.prepare(ctx, req)
		if status != 0 {
			drain(req)
			writeError(client, status, msg)
			if req.Close {
				return
			}
			continue
		}
		if err := req.Write(engine); err != nil {
			release(false)
			p.Log.WithError(err).Debug("request not passed to the engine")
			return
		}
		stopWatching := watchClient(client, br, engine)
		resp, err := http.ReadResponse(ebr, req)
		if err != nil {
			stopWatching()
			release(false)
			writeError(client, http.StatusBadGateway, "the docker engine's answer was cut off: "+err.Error())
			return
		}
		release(resp.StatusCode < 300)
		if hijacked(req, resp) {
			stopWatching()
			p.joinHijacked(client, br, engine, ebr, resp)
			return
		}
		err = resp.Write(client)
		resp.Body.Close()
		stopWatching()
		if err != nil || req.Close || resp.Close {
			return
		}
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

// readRequest reads one request's head; its body stays on br, read as it
// is passed on. A head that does not fit br's buffer is refused.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	for searched := 0; ; {
		n := br.Buffered()
		b, _ := br.Peek(n) // what is buffered: never blocks, never fails
		if bytes.Contains(b[max(0, searched-3):], []byte("\r\n\r\n")) {
			break
		}
		searched = n
		if n == br.Size() {
			return nil, errHeadTooLarge
		}
		if _, err := br.Peek(n + 1); err != nil { // wait for more
			if n == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("request head cut off: %w", err)
		}
	}
	return http.ReadRequest(br)
}

var errHeadTooLarge = errors.New("request head over 64 KB")

// prepare rewrites a create request's body and reserves a start's ports.
// It returns what to do once the engine has answered (keep=true: the
// start happened) and, when the request must not go on, the status and
// message to answer with instead.
func (p *Proxy) prepare(ctx context.Context, req *http.Request) (release func(keep bool), status int, msg string) {
	release = func(bool) {}
	if req.Method != http.MethodPost {
		return release, 0, ""
	}
	switch {
	case createPath.MatchString(req.URL.Path) && p.Translate != nil:
		body, err := io.ReadAll(io.LimitReader(req.Body, maxCreateBody+1))
		req.Body.Close()
		if err != nil {
			return release, http.StatusBadRequest, "reading the create request: " + err.Error()
		}
		if len(body) > maxCreateBody {
			return release, http.StatusRequestEntityTooLarge, fmt.Sprintf("a create request over %d bytes", maxCreateBody)
		}
		out, err := RewriteCreate(body, p.Translate, p.Label)
		if err != nil {
			return release, http.StatusBadRequest, err.Error()
		}
		setBody(req, out)
	case p.Ports != nil:
		m := startPath.FindStringSubmatch(req.URL.Path)
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

func setBody(req *http.Request, body []byte) {
	req.Body = io.NopCloser(strings.NewReader(string(body)))
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	req.TransferEncoding = nil
}

// drain reads what is left of a refused request's body, so the next
// request on the connection is read from its start.
func drain(req *http.Request) {
	io.Copy(io.Discard, io.LimitReader(req.Body, maxCreateBody))
	req.Body.Close()
}

// hijacked reports whether the connection leaves HTTP after this
// response: an upgrade (attach, exec) or docker's raw stream.
func hijacked(req *http.Request, resp *http.Response) bool {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return true
	}
	ct := resp.Header.Get("Content-Type")
	streamed := ct == "application/vnd.docker.raw-stream" || ct == "application/vnd.docker.multiplexed-stream"
	return streamed && resp.ContentLength < 0 && len(resp.TransferEncoding) == 0
}

// joinHijacked passes the response head on and then every byte both
// ways, half-closes included, until both sides are done.
func (p *Proxy) joinHijacked(client net.Conn, cbr *bufio.Reader, engine net.Conn, ebr *bufio.Reader, resp *http.Response) {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/%d.%d %s\r\n", resp.ProtoMajor, resp.ProtoMinor, resp.Status)
	// The head as the engine sent it; resp.Write would frame a body.
	resp.Header.Write(&b)
	b.WriteString("\r\n")
	if _, err := io.WriteString(client, b.String()); err != nil {
		return
	}
	vsock.Join(bufferedConn{client, cbr}, bufferedConn{engine, ebr})
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

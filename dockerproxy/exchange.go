package dockerproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ddinit/ddinit/engineclient"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// exchange passes one request to the engine and its answer back. It
// reports whether the connection goes on to the next request.
func (c *conn) exchange(req head) (keep bool) {
	if c.p.BuildArgs != nil && req.method == http.MethodPost && buildPath.MatchString(req.route) {
		edited, err := req.withBuildArgs(c.p.BuildArgs())
		if err != nil {
			c.answerError(http.StatusBadRequest, "build request: "+err.Error())
			return false
		}
		req = edited
	}
	b := &body{from: c.clientSide(), framing: requestFraming(req)}
	release, status, msg := c.p.prepare(c.ctx, req, b, c.client, c.budgetClient(req))
	if status != 0 {
		release(false) // what prepare took (the create budget) goes back
		writeError(c.client, status, msg)
		// The connection goes on only where the refused request's body is
		// known to be off it: not one a client holds back for a 100
		// Continue it was not sent.
		if req.close || req.expectContinue && b.rewritten == nil || !c.consumed(b) {
			c.linger()
			return false
		}
		return true
	}
	reused := c.engine != nil
	if !c.connect(req) {
		release(false)
		return false
	}
	resp, pending, err := c.pass(req, b)
	if err != nil && reused && lostIdle(req, b, err) {
		// The engine had let this connection go while it was idle (it
		// restarted, stopped idle, or a version switch replaced it):
		// nothing of the request was taken, and it goes again once, on a
		// new connection, as Go's own client does.
		c.dropEngine()
		b.engineErr = nil
		if !c.connect(req) {
			release(false)
			return false
		}
		resp, pending, err = c.pass(req, b)
	}
	if err != nil {
		release(false)
		if pending != nil {
			// The body's sender stops: its reads and its writes.
			c.engine.Close()
			c.client.SetReadDeadline(time.Now())
			pending.wait()
		}
		switch {
		case errors.Is(err, errBadFraming):
			c.answerError(http.StatusBadRequest, "malformed request: "+err.Error())
		case !errors.Is(err, errClientGone):
			c.answerError(http.StatusBadGateway, "the docker engine's answer was cut off: "+err.Error())
		}
		return false
	}
	// 304: a start of a container already running, whose ports stay.
	release(resp.status < 300 || resp.status == http.StatusNotModified)
	keep = c.answer(req, resp, pending)
	if pending != nil {
		// The answer came while the body was still on its way (an early
		// answer, or just a fast one): the rest is read off (passed on, or
		// dropped once the engine stops reading). The connection goes on
		// only if the engine took the whole body, as its framing then
		// agrees with the client's.
		c.client.SetReadDeadline(time.Now().Add(drainTimeout))
		err := pending.wait()
		c.client.SetReadDeadline(time.Time{})
		return keep && err == nil && b.engineErr == nil
	}
	return keep
}

// connect makes sure there is an engine connection for req, or answers
// the client why not.
func (c *conn) connect(req head) bool {
	err := c.dialEngine(req.internal)
	if err == nil {
		return true
	}
	var held *HeldError
	if errors.As(err, &held) {
		// The engine was held for (waking, a switch) and did not come:
		// the reason, and when to try again.
		c.answerError(http.StatusServiceUnavailable, err.Error())
		return false
	}
	c.answerError(http.StatusBadGateway, "the docker engine is not reachable: "+err.Error())
	return false
}

// errNotSent is a request no byte of which reached the engine: the
// connection was closed before it was written.
var errNotSent = errors.New("the engine connection was closed before the request was sent")

// errNoAnswer is a request sent on a connection the engine closed before
// any byte of an answer: one the engine was closing as idle when the
// request came, which it drops unread.
var errNoAnswer = errors.New("the engine closed the connection without an answer")

// lostIdle reports a request that may go again on a new connection after
// err on one kept from an earlier request: one never sent, or one sent
// that cannot have had an effect twice (a GET or HEAD without a body), as
// Go's http.Transport decides.
func lostIdle(req head, b *body, err error) bool {
	switch {
	case errors.Is(err, errNotSent):
		return true
	case errors.Is(err, errNoAnswer):
		return (req.method == http.MethodGet || req.method == http.MethodHead) && b.rewritten == nil && !b.streaming()
	}
	return false
}

// dropEngine lets go of the engine connection.
func (c *conn) dropEngine() {
	c.late.disarm()
	c.engine.Close()
	putReader(c.ebr)
	c.engine, c.ebr, c.engineHeld, c.late = nil, nil, nil, nil
}

// dialEngine opens the engine connection at the first request; a request
// of ddinit's own (internal) says so to Dial, which may hold it.
func (c *conn) dialEngine(internal bool) error {
	if c.engine != nil {
		return nil
	}
	ctx := c.ctx
	if internal {
		ctx = engineclient.WithInternal(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, c.p.dialTimeout())
	defer cancel()
	engine, err := c.p.Dial(ctx)
	if err != nil {
		return err
	}
	c.engine, c.ebr, c.engineHeld = engine, newReader(engine), nil
	c.late = newLateWatch(slowAnswer, func() func() { return watchClient(c.client, c.br, c.engine) })
	return nil
}

// createBodyTimeout bounds the reading of a create body the proxy edits.
const createBodyTimeout = 30 * time.Second

// errClientGone is a request body cut off by its client.
var errClientGone = errors.New("the client went away while sending its request")

// pass sends the request and returns the engine's final answer, having
// passed on any interim (1xx) one. A body is sent while the answer is
// awaited: an answer that comes before the whole body (an upload the
// engine refuses at once) reaches the client at once; pending then
// reports when the body has been read off.
func (c *conn) pass(req head, b *body) (resp head, pending *sending, err error) {
	if !b.streaming() {
		if err := b.send(c.engine, req); err != nil {
			return head{}, nil, err
		}
		c.late.arm()
		resp, err = c.readFinal()
		c.late.disarm()
		return resp, nil, err
	}
	// The head goes first, here: a connection found closed is known
	// before any of the body is taken off the client.
	if err := b.sendHead(c.engine, req); err != nil {
		return head{}, nil, err
	}
	sent := make(chan error, 1)
	go func() { sent <- b.sendBody(c.engine) }()
	type answer struct {
		h   head
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		h, err := c.readFinal()
		answered <- answer{h, err}
	}()
	select {
	case err := <-sent:
		if err != nil {
			// The client stopped mid-body, or framed it so the engine
			// could read it otherwise: the engine must not wait for the
			// rest for ever.
			c.engine.Close()
			<-answered
			if errors.Is(err, errBadFraming) {
				return head{}, nil, err
			}
			return head{}, nil, errClientGone
		}
		c.late.arm()
		a := <-answered
		c.late.disarm()
		return a.h, nil, a.err
	case a := <-answered:
		return a.h, &sending{done: sent}, a.err
	}
}

// sending is a request body still on its way to the engine after the
// answer came. Its outcome is taken once, and any number of waits after
// that return it: the answer's hijack and the exchange's end both wait.
type sending struct {
	done   <-chan error
	err    error
	waited bool
}

func (s *sending) wait() error {
	if !s.waited {
		s.err, s.waited = <-s.done, true
	}
	return s.err
}

// readFinal reads the engine's answer, passing interim 1xx answers (100
// Continue, 103 Early Hints) on to the client as they come.
func (c *conn) readFinal() (head, error) {
	for first := true; ; first = false {
		resp, err := c.readResponse()
		if err != nil && first && nothingCame(err) {
			return resp, fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		if err != nil || resp.status/100 != 1 || resp.status == http.StatusSwitchingProtocols {
			return resp, err
		}
		if _, err := c.client.Write(resp.raw); err != nil {
			return resp, err
		}
	}
}

// answer passes the final answer on: its head and body, a stream as it
// comes, or the whole connection for a hijack (attach, exec). While the
// request's body is still being read (pending), the client is not watched
// for going away: only one reader reads it at a time.
func (c *conn) answer(req, resp head, pending *sending) (keep bool) {
	if hijacked(resp) {
		if pending != nil {
			pending.wait()
		}
		if _, err := c.client.Write(resp.raw); err == nil {
			c.answered(req)
			transport.Join(c.clientSide(), c.engineSide())
		}
		return false
	}
	f := responseFraming(req, resp)
	// A small answer already here goes out with its head, in one write.
	if !f.streamed() && f.length > 0 && f.length <= int64(c.ebr.Buffered()) && f.length <= smallBuffer {
		b, _ := c.ebr.Peek(int(f.length))
		resp.raw = append(resp.raw, b...)
		c.ebr.Discard(int(f.length))
		f.length = 0
	}
	if _, err := c.client.Write(resp.raw); err != nil {
		return false
	}
	c.answered(req)
	stopWatching := func() {}
	if f.streamed() && pending == nil {
		stopWatching = watchClient(c.client, c.br, c.engine)
	}
	err := copyBody(&sink{conn: c.client}, c.engineSide(), f)
	stopWatching()
	return err == nil && !req.close && !resp.close && !f.toEOF
}

// streaming reports a body passed on as it comes (one the proxy has not
// read whole).
func (b *body) streaming() bool {
	return b.rewritten == nil && (b.framing.chunked || b.framing.length > 0)
}

// consumed reads off what is left of a refused request's body, when that
// is small and known and comes in time, and reports whether none is left.
func (c *conn) consumed(b *body) bool {
	c.client.SetReadDeadline(time.Now().Add(drainTimeout))
	defer c.client.SetReadDeadline(time.Time{})
	return b.consumed()
}

func (b *body) consumed() bool {
	switch {
	case b.broken:
		return false
	case b.rewritten != nil:
		return len(b.rewritten) <= maxCreateBody
	case b.framing.chunked || b.framing.length > maxCreateBody:
		return false
	}
	n, err := io.CopyN(io.Discard, b.from.r, b.framing.length)
	return err == nil && n == b.framing.length
}

// reader reads the body as it is framed, decoded (for prepare), through
// its trailer.
func (b *body) reader() io.Reader {
	if b.framing.chunked {
		return newChunkedReader(b.from.r)
	}
	return io.LimitReader(b.from.r, b.framing.length)
}

// send passes the request on: its raw head and body, or, when rewritten,
// the head with a new length and the new body. A body is read off the
// client whole even once the engine stops taking it; the error is then
// the client's.
func (b *body) send(engine net.Conn, req head) error {
	if err := b.sendHead(engine, req); err != nil {
		return err
	}
	return b.sendBody(engine)
}

// sendHead writes the head, and a rewritten body with it; errNotSent
// when none of it went.
func (b *body) sendHead(engine net.Conn, req head) error {
	out := req.raw
	if b.rewritten != nil {
		out = append(req.withLength(len(b.rewritten)), b.rewritten...)
	}
	n, err := engine.Write(out)
	if err != nil && n == 0 {
		return fmt.Errorf("%w: %w", errNotSent, err)
	}
	return err
}

// sendBody passes on the body that follows the head on the client's
// connection, if it is one passed on as it comes.
func (b *body) sendBody(engine net.Conn) error {
	if !b.streaming() {
		return nil
	}
	d := &sink{conn: engine, drain: true}
	err := copyBody(d, b.from, b.framing)
	b.engineErr = d.err
	return err
}

// prepare edits a create request's body and reserves a start's ports. It
// returns what to do once the engine has answered (keep=true: the start
// happened) and, when the request must not go on, the status and message
// to answer with instead.
func (p *Proxy) prepare(ctx context.Context, req head, b *body, conn net.Conn, client string) (release func(keep bool), status int, msg string) {
	release = func(bool) {}
	if req.method != http.MethodPost {
		return release, 0, ""
	}
	switch {
	case createPath.MatchString(req.route) && (p.Translate != nil || len(p.Edits) > 0):
		if b.framing.length > maxCreateBody {
			return release, http.StatusRequestEntityTooLarge, fmt.Sprintf("a create request over %d bytes", maxCreateBody)
		}
		// A body of known length takes its length from the budget at
		// once; a chunked one as it comes.
		budget := p.budget()
		body := &budgetedReader{r: b.reader(), pool: budget, client: client}
		if !b.framing.chunked {
			if why := budget.TakeWhy(client, b.framing.length); why != fairshare.Granted {
				p.warnf(logrus.Fields{"client": client, "why": why.String()}, "create requests over the proxy's memory budget; answered 503")
				return release, http.StatusServiceUnavailable, errCreateBudget.Error()
			}
			body.taken = b.framing.length
		}
		release = func(bool) { body.release() }
		if req.expectContinue {
			// The proxy reads the body itself: it says so, and the engine
			// gets the body whole, without the Expect.
			if _, err := io.WriteString(conn, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return release, http.StatusBadRequest, "the client went away"
			}
		}
		// A create body is a few KB: one that does not come in time does
		// not hold its share of the budget.
		conn.SetReadDeadline(time.Now().Add(createBodyTimeout))
		raw, err := io.ReadAll(io.LimitReader(body, maxCreateBody+1))
		conn.SetReadDeadline(time.Time{})
		switch {
		case errors.Is(err, errCreateBudget):
			b.broken = true
			p.warnf(logrus.Fields{"client": client}, "create requests over the proxy's memory budget; answered 503")
			return release, http.StatusServiceUnavailable, err.Error()
		case err != nil:
			b.broken = true
			return release, http.StatusBadRequest, "reading the create request: " + err.Error()
		}
		if len(raw) > maxCreateBody {
			b.broken = true
			return release, http.StatusRequestEntityTooLarge, fmt.Sprintf("a create request over %d bytes", maxCreateBody)
		}
		b.rewritten = raw // read off the connection: passed on from memory
		edits := append([]CreateEdit{RewriteBinds(p.Translate), LabelRewritten(p.Label)}, p.Edits...)
		out, err := EditCreate(raw, p.hostLayout(ctx), edits...)
		var engineErr *EngineError
		switch {
		case errors.As(err, &engineErr):
			return release, http.StatusBadGateway, err.Error()
		case err != nil:
			return release, http.StatusBadRequest, err.Error()
		}
		b.rewritten = out
	case p.Ports != nil:
		m := startPath.FindStringSubmatch(req.route)
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

// answered tells Answered that an answer's head went out (a stream's or a
// hijack's as soon as it begins), for requests not of ddinit's own.
func (c *conn) answered(req head) {
	if c.p.Answered != nil && !req.internal {
		c.p.Answered()
	}
}

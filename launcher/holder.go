package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// The holder stands between every exposed socket and the engine (ddinit
// run's side of the engine on demand). It mirrors the engine's state
// machine (package enginestate), which PID 1 owns and reports, and takes
// the few steps that are ddinit run's: asking for an idle stop or pause
// (Stopping), asking for a wake (Waking), holding every client while PID 1
// is replaced (Switching). While the engine runs, a dial goes through and
// a client's connection is counted; while it is idle, a client's dial
// wakes it and is held until it answers — slower, never an error — and
// ddinit's own dials (a distro proxy's followers) are held without waking
// it. Concurrent first dials share one wake. A wake that fails is a 503
// naming the cause for those who waited on it; the next dial tries again.
// Nobody using it for idleStop stops it.
//
// ddinit's own connections through it (the port publisher's and the
// distro proxies' event streams) end when the engine leaves Running:
// dockerd 28 waits up to 5 s at its stop for every request still open,
// and an event stream never finishes by itself. Their followers open them
// again, held until the engine runs, and catch up then.

// holdFor bounds how long a dial is held while the engine wakes or PID 1
// is replaced (a variable for the tests).
var holdFor = 2 * time.Minute

type holder struct {
	// ask sends PID 1 an engine request and waits for the answer.
	ask func(op wire.Op) (wire.Reply, error)
	log logrus.FieldLogger
	// now is time.Now, but for tests.
	now func() time.Time

	// waking are the wakes asked of PID 1 and not answered yet.
	waking sync.WaitGroup

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	state     enginestate.Snapshot
	wakeGen   int   // counts wakes begun
	wakeErr   error // the last wake's failure
	closed    bool
	clients   int
	lastUse   time.Time
	recheckAt time.Time // after a busy answer, not asked again before
	idleStop  time.Duration
	idlePause time.Duration

	// ownMu guards own, ddinit's own open connections (taken after mu,
	// never before: an ownConn's Close takes only ownMu).
	ownMu sync.Mutex
	own   map[*ownConn]struct{}
}

func newHolder(ask func(op wire.Op) (wire.Reply, error), log logrus.FieldLogger) *holder {
	h := &holder{ask: ask, log: log, now: time.Now, changed: make(chan struct{}), own: map[*ownConn]struct{}{}}
	h.state = enginestate.Snapshot{State: enginestate.Running, Since: h.now()}
	h.lastUse = h.now()
	return h
}

// step takes one of ddinit run's own steps of the state machine, as the
// table allows (h.mu held); it wakes everyone waiting on a change.
func (h *holder) step(next enginestate.State, reason string) {
	if !h.state.State.CanBecome(next) && h.state.State != next {
		h.log.WithFields(logrus.Fields{"from": h.state.State, "to": next}).Debug("the holder follows a step the table does not take")
	}
	h.leaving(next)
	h.state = enginestate.Snapshot{State: next, Since: h.now(), Reason: reason}
	h.broadcast()
}

// leaving ends ddinit's own connections when the engine leaves Running
// for next (h.mu held).
func (h *holder) leaving(next enginestate.State) {
	if h.state.State != enginestate.Running || next == enginestate.Running {
		return
	}
	h.ownMu.Lock()
	own := h.own
	h.own = map[*ownConn]struct{}{}
	h.ownMu.Unlock()
	for c := range own {
		c.Conn.Close()
	}
}

func (h *holder) broadcast() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// mirror takes the state PID 1 reports. While PID 1 is replaced, the one
// going says nothing of the next one's engine.
func (h *holder) mirror(e wire.Engine) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state.State == enginestate.Switching {
		return
	}
	if e.State == enginestate.Running && h.state.State != enginestate.Running {
		h.lastUse = h.now()
	}
	if e.State == enginestate.WakeFailed {
		h.wakeErr = errors.New(e.Reason)
	}
	h.leaving(e.State)
	h.state = enginestate.Snapshot{State: e.State, Since: e.Since, Reason: e.Reason}
	h.broadcast()
}

// dial dials the engine with d, holding the dial as the state says.
func (h *holder) dial(ctx context.Context, d func(context.Context) (net.Conn, error)) (net.Conn, error) {
	internal := engineclient.Internal(ctx)
	waited := -1   // the wake this dial waits on
	var held error // why the dial ends without reaching the engine
	deadline := time.NewTimer(holdFor)
	defer deadline.Stop()
	err := h.waitUntil(ctx, deadline.C, func() bool {
		if h.closed {
			held = &dockerproxy.HeldError{Reason: "ddinit is stopping"}
			return true
		}
		switch s := h.state.State; {
		case s == enginestate.Running:
			if !internal {
				h.clients++
			}
			return true
		case s.Idle():
			if waited >= 0 && h.wakeGen == waited && h.wakeErr != nil {
				held = &dockerproxy.HeldError{Reason: "waking the docker engine failed: " + h.wakeErr.Error()}
				return true
			}
			if !internal {
				h.beginWake()
				waited = h.wakeGen
			}
		case s == enginestate.Waking:
			if !internal && waited < 0 {
				waited = h.wakeGen
			}
		}
		return false
	})
	switch {
	case errors.Is(err, errHeldTooLong):
		h.mu.Lock()
		state := h.state
		h.mu.Unlock()
		if state.State == enginestate.Switching {
			return nil, &dockerproxy.HeldError{Reason: fmt.Sprintf("%s: not done within %s", state.Reason, holdFor)}
		}
		return nil, &dockerproxy.HeldError{Reason: fmt.Sprintf("the docker engine did not wake within %s", holdFor)}
	case err != nil:
		return nil, err
	case held != nil:
		return nil, held
	}
	c, err := d(ctx)
	switch {
	case err != nil && !internal:
		h.release()
		return nil, err
	case err != nil:
		return nil, err
	case internal:
		return h.keepOwn(c), nil
	}
	return &clientConn{Conn: c, release: h.release}, nil
}

// keepOwn registers one of ddinit's own connections, to be ended when
// the engine leaves Running; one dialled as it left is ended at once.
func (h *holder) keepOwn(c net.Conn) net.Conn {
	oc := &ownConn{Conn: c, h: h}
	h.mu.Lock()
	running := h.state.State == enginestate.Running
	if running {
		h.ownMu.Lock()
		h.own[oc] = struct{}{}
		h.ownMu.Unlock()
	}
	h.mu.Unlock()
	if !running {
		c.Close()
	}
	return oc
}

// errHeldTooLong is waitUntil's when its deadline passes.
var errHeldTooLong = errors.New("held too long")

// waitUntil waits until done, asked with h.mu held at the start and after
// each change, is true: nil then, ctx's error if ctx ends first, and
// errHeldTooLong if deadline passes first.
func (h *holder) waitUntil(ctx context.Context, deadline <-chan time.Time, done func() bool) error {
	for {
		h.mu.Lock()
		if done() {
			h.mu.Unlock()
			return nil
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return errHeldTooLong
		}
	}
}

// beginWake asks PID 1 to wake the engine (h.mu held). Its answer
// settles the state only while this wake is the latest: PID 1's reports
// usually came first, and a wake begun after a failure is its own.
func (h *holder) beginWake() {
	h.wakeGen++
	gen := h.wakeGen
	h.wakeErr = nil
	h.step(enginestate.Waking, "")
	h.log.Info("a client needs the engine: waking it")
	h.waking.Add(1)
	go func() {
		defer h.waking.Done()
		start := h.now()
		reply, err := h.ask(wire.Wake)
		if err == nil {
			err = reply.Err.Err()
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.wakeGen != gen {
			return // a later wake is the one the clients wait on
		}
		if err != nil {
			h.wakeErr = err
			if h.state.State == enginestate.Waking {
				h.step(enginestate.WakeFailed, err.Error())
			} else {
				h.broadcast()
			}
			h.log.WithError(err).Error("the engine did not wake; the next client tries again")
			return
		}
		if h.state.State == enginestate.Waking {
			h.lastUse = h.now()
			h.step(enginestate.Running, "")
		}
		h.log.WithField("ms", h.now().Sub(start).Milliseconds()).Info("engine awake: held clients passed on")
	}()
}

// release is a client's connection ending.
func (h *holder) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients--
	if h.clients == 0 {
		h.lastUse = h.now()
	}
}

// setIdle sets how long the engine may go unused before it is stopped
// and before it is paused; 0: never.
func (h *holder) setIdle(stop, pause time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if stop != h.idleStop || pause != h.idlePause {
		h.log.WithFields(logrus.Fields{"idleStop": stop.String(), "idlePause": pause.String()}).Info("the engine is paused, then stopped, after this long unused (0: never)")
	}
	h.idleStop, h.idlePause = stop, pause
	h.lastUse = h.now()
}

// open takes dials again (a new PID 1's engine, in the same run): the
// engine is a new one, running. Clients still connected keep their count:
// each is released as it ends.
func (h *holder) open() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed, h.lastUse = false, h.now()
	h.step(enginestate.Running, "")
}

// suspend holds every dial from now on, for reason, until open (the next
// PID 1's engine ready) or close: PID 1 is being replaced. Connections
// already through stay with the engine they reached.
func (h *holder) suspend(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.step(enginestate.Switching, reason)
}

// awaitReplaced waits, while PID 1 is being replaced, until the new one's
// engine is ready (or ctx ends, or holdFor passes): what belongs to the
// running PID 1 (its port publisher) is then the new one's.
func (h *holder) awaitReplaced(ctx context.Context) {
	deadline := time.NewTimer(holdFor)
	defer deadline.Stop()
	h.waitUntil(ctx, deadline.C, func() bool { return h.state.State != enginestate.Switching || h.closed })
}

// switching reports whether dials are held for a new PID 1.
func (h *holder) switching() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.State == enginestate.Switching && !h.closed
}

// close ends every held dial: ddinit is stopping. It returns once the
// wakes it asked for are answered (PID 1's going answers them).
func (h *holder) close() {
	h.mu.Lock()
	h.closed = true
	h.broadcast()
	h.mu.Unlock()
	h.waking.Wait()
}

// idleCheck is how often the idle loop looks at the clients.
const idleCheck = 250 * time.Millisecond

// idleLoop stops (or pauses) the engine once nobody has used it for
// idleStop (idlePause), until ctx ends. PID 1 may find it busy after all
// (a container runs): then it is asked again a while later.
func (h *holder) idleLoop(ctx context.Context) {
	tick := time.NewTicker(idleCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		op, was := h.idleOp(), h.state
		if op != "" {
			// New dials wait from here: none may reach a dockerd that is
			// being stopped or frozen.
			h.step(enginestate.Stopping, "idle")
		}
		h.mu.Unlock()
		if op == "" {
			continue
		}
		reply, err := h.ask(op)
		if err == nil {
			err = reply.Err.Err()
		}
		h.mu.Lock()
		if err == nil && reply.Busy != "" {
			h.log.WithField("busy", reply.Busy).Debug("the engine is not idle after all")
			h.recheckAt = h.now().Add(min(max(h.idleFor()/2, time.Second), 30*time.Second))
		}
		switch {
		case h.state.State != enginestate.Stopping:
			// PID 1 said where the engine went (its own reports came
			// first), or it is being replaced: that state stands.
		case err != nil:
			h.log.WithError(err).WithField("op", op).Warn("the idle engine was not paused or stopped")
			h.lastUse = h.now()
			h.state = was
			h.broadcast()
		case reply.Busy != "":
			h.step(enginestate.Running, "")
		default:
			next := enginestate.Stopped
			if op == wire.PauseIfIdle {
				next = enginestate.Paused
			}
			h.step(next, "idle")
			h.log.WithField("state", next).Info("engine idle: the next client wakes it")
		}
		h.mu.Unlock()
	}
}

// idleOp is what the engine is due for now (h.mu held): a stop, a pause,
// or nothing.
func (h *holder) idleOp() wire.Op {
	unused := h.now().Sub(h.lastUse)
	s := h.state.State
	quiet := h.clients == 0 && (s == enginestate.Running || s == enginestate.Paused) && h.now().After(h.recheckAt)
	switch {
	case quiet && h.idleStop > 0 && unused >= h.idleStop:
		return wire.StopIfIdle
	case quiet && s == enginestate.Running && h.idlePause > 0 && (h.idleStop == 0 || h.idlePause < h.idleStop) && unused >= h.idlePause:
		return wire.PauseIfIdle
	}
	return ""
}

// idleFor is the shorter of the idle times set (h.mu held).
func (h *holder) idleFor() time.Duration {
	idle := h.idleStop
	if h.idlePause > 0 && (idle == 0 || h.idlePause < idle) {
		idle = h.idlePause
	}
	return idle
}

// ownConn is one of ddinit's own engine connections: ended when the
// engine leaves Running.
type ownConn struct {
	net.Conn
	h *holder
}

func (c *ownConn) Close() error {
	c.h.ownMu.Lock()
	delete(c.h.own, c)
	c.h.ownMu.Unlock()
	return c.Conn.Close()
}

// CloseWrite passes a half-close on.
func (c *ownConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// clientConn is a client's engine connection: counted until closed.
type clientConn struct {
	net.Conn
	release func()
	once    atomic.Bool
}

func (c *clientConn) Close() error {
	if c.once.CompareAndSwap(false, true) {
		c.release()
	}
	return c.Conn.Close()
}

// CloseWrite passes a half-close on (a hijacked stream's end).
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

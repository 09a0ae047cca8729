package initd

import (
	"context"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/engineclient"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/sirupsen/logrus"
)

// The holder stands between every exposed socket and the engine (ddinit
// run's side of the engine on demand). While the engine runs, a dial goes
// through and a client's connection is counted; while it is stopped, a
// client's dial wakes it and is held until it answers — slower, never an
// error — and ddinit's own dials (a distro proxy's followers) are held
// without waking it. Concurrent first dials share one wake. A wake that
// fails is a 503 naming the cause for those who waited on it; the next
// dial tries again. Nobody using it for idleStop stops it. While PID 1 is
// replaced (switch.go), every dial is held, with the switch as the reason.

// Engine states as the holder sees them.
const (
	engineRunning  = "running"
	engineStopping = "stopping" // asking PID 1 to stop it if idle
	engineStopped  = "stopped"
	enginePaused   = "paused" // frozen (idlePause): a wake is a thaw
	engineWaking   = "waking"
	// engineSwitching: PID 1 is being replaced (a live version-pack
	// switch, a rollback). Every dial waits, ddinit's own too, until the
	// new engine is ready.
	engineSwitching = "switching"
)

// holdFor bounds how long a dial is held while the engine wakes or PID 1
// is replaced (a variable for the tests).
var holdFor = 2 * time.Minute

type holder struct {
	// ask sends PID 1 an engine request and waits for the answer.
	ask func(op string) (engineReply, error)
	log logrus.FieldLogger

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	state     string
	reason    string // why dials are held while switching
	wakeGen   int    // counts wakes begun
	wakeErr   error  // the last wake's failure
	closed    bool
	clients   int
	lastUse   time.Time
	recheckAt time.Time // after a busy answer, not asked again before
	idleStop  time.Duration
	idlePause time.Duration
}

func newHolder(ask func(op string) (engineReply, error), log logrus.FieldLogger) *holder {
	return &holder{ask: ask, log: log, changed: make(chan struct{}), state: engineRunning, lastUse: time.Now()}
}

// set changes the state and wakes everyone waiting on it (h.mu held).
func (h *holder) set(state string) {
	h.state = state
	close(h.changed)
	h.changed = make(chan struct{})
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
		switch h.state {
		case engineRunning:
			if !internal {
				h.clients++
			}
			return true
		case engineStopped, enginePaused:
			if waited >= 0 && h.wakeGen == waited && h.wakeErr != nil {
				held = &dockerproxy.HeldError{Reason: "waking the docker engine failed: " + h.wakeErr.Error()}
				return true
			}
			if !internal {
				h.beginWake()
				waited = h.wakeGen
			}
		case engineWaking:
			if !internal && waited < 0 {
				waited = h.wakeGen
			}
		}
		return false
	})
	switch {
	case errors.Is(err, errHeldTooLong):
		h.mu.Lock()
		state, reason := h.state, h.reason
		h.mu.Unlock()
		if state == engineSwitching {
			return nil, &dockerproxy.HeldError{Reason: fmt.Sprintf("%s: not done within %s", reason, holdFor)}
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
	case err != nil || internal:
		return c, err
	}
	return &clientConn{Conn: c, release: h.release}, nil
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

// beginWake asks PID 1 to wake the engine (h.mu held).
func (h *holder) beginWake() {
	h.wakeGen++
	h.wakeErr = nil
	h.set(engineWaking)
	h.log.Info("a client needs the engine: waking it")
	go func() {
		start := time.Now()
		reply, err := h.ask("wake")
		if err == nil && reply.Error != "" {
			err = errors.New(reply.Error)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.state != engineWaking {
			return
		}
		if err != nil {
			h.wakeErr = err
			h.set(engineStopped)
			h.log.WithError(err).Error("the engine did not wake; the next client tries again")
			return
		}
		h.lastUse = time.Now()
		h.set(engineRunning)
		h.log.WithField("ms", time.Since(start).Milliseconds()).Info("engine awake: held clients passed on")
	}()
}

// release is a client's connection ending.
func (h *holder) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients--
	if h.clients == 0 {
		h.lastUse = time.Now()
	}
}

// engineStateFromPID1 follows what PID 1 says the engine is (a wake it
// did itself, for a settings change).
func (h *holder) engineStateFromPID1(running bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.state == engineSwitching:
		// The PID 1 going away says nothing of the next one's engine.
	case running && h.state != engineRunning:
		h.lastUse = time.Now()
		h.set(engineRunning)
	case !running && h.state == engineRunning:
		h.set(engineStopped)
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
	h.lastUse = time.Now()
}

// setIdleStop sets how long the engine may go unused; 0: never stopped.
func (h *holder) setIdleStop(d time.Duration) { h.setIdle(d, 0) }

// open takes dials again (a new PID 1's engine, in the same run): the
// engine is a new one, running. Clients still connected keep their count:
// each is released as it ends.
func (h *holder) open() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed, h.lastUse, h.reason = false, time.Now(), ""
	h.set(engineRunning)
}

// suspend holds every dial from now on, for reason, until open (the next
// PID 1's engine ready) or close: PID 1 is being replaced. Connections
// already through stay with the engine they reached.
func (h *holder) suspend(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reason = reason
	h.set(engineSwitching)
}

// awaitReplaced waits, while PID 1 is being replaced, until the new one's
// engine is ready (or ctx ends, or holdFor passes): what belongs to the
// running PID 1 (its port publisher) is then the new one's.
func (h *holder) awaitReplaced(ctx context.Context) {
	deadline := time.NewTimer(holdFor)
	defer deadline.Stop()
	h.waitUntil(ctx, deadline.C, func() bool { return h.state != engineSwitching || h.closed })
}

// switching reports whether dials are held for a new PID 1.
func (h *holder) switching() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state == engineSwitching && !h.closed
}

// close ends every held dial: ddinit is stopping.
func (h *holder) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.set(h.state)
}

// idleLoop stops the engine once nobody has used it for idleStop,
// until ctx ends. PID 1 may find it busy after all (a container runs):
// then it is asked again a while later.
func (h *holder) idleLoop(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		unused := time.Since(h.lastUse)
		quiet := h.clients == 0 && (h.state == engineRunning || h.state == enginePaused) && time.Now().After(h.recheckAt)
		op, next, was := "", "", h.state
		switch {
		case quiet && h.idleStop > 0 && unused >= h.idleStop:
			op, next = "stop-if-idle", engineStopped
		case quiet && h.state == engineRunning && h.idlePause > 0 && (h.idleStop == 0 || h.idlePause < h.idleStop) && unused >= h.idlePause:
			op, next = "pause-if-idle", enginePaused
		}
		if op != "" {
			// New dials wait from here: none may reach a dockerd that is
			// being stopped or frozen.
			h.set(engineStopping)
		}
		h.mu.Unlock()
		if op == "" {
			continue
		}
		reply, err := h.ask(op)
		h.mu.Lock()
		switch {
		case h.state != engineStopping:
			// PID 1 is being replaced (switching) or ddinit stops: that
			// state stands, whatever this PID 1 answered.
		case err != nil || reply.Error != "":
			if err == nil {
				err = errors.New(reply.Error)
			}
			h.log.WithError(err).WithField("op", op).Warn("the idle engine was not paused or stopped")
			h.lastUse = time.Now()
			h.set(was)
		case reply.Busy != "":
			h.log.WithField("busy", reply.Busy).Debug("the engine is not idle after all")
			idle := h.idleStop
			if h.idlePause > 0 && (idle == 0 || h.idlePause < idle) {
				idle = h.idlePause
			}
			h.recheckAt = time.Now().Add(min(max(idle/2, time.Second), 30*time.Second))
			h.set(engineRunning)
		default:
			h.set(next)
			h.log.WithField("state", next).Info("engine idle: the next client wakes it")
		}
		h.mu.Unlock()
	}
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

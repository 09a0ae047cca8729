package dockerproxy

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// An answer slow to come (docker wait, a pull) can outlast its client, and
// a stream (logs -f, events) can run on after its client has gone: the
// client is watched meanwhile, and its going away passed on to the engine.

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

func newLateWatch(d time.Duration, start func() (stop func())) *lateWatch {
	w := &lateWatch{d: d, start: start}
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

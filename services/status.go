package services

import (
	"fmt"
	"strings"
	"time"

	"github.com/ddinit/ddinit/logs"
	"golang.org/x/sys/unix"
)

// States of containerd and of a service.
const (
	StateWaiting      = "waiting"      // for containerd or a dependency
	StateStarting     = "starting"     // started, not yet ready
	StateRunning      = "running"      // ready
	StateUnresponsive = "unresponsive" // running, but its liveness probe gets no answer
	StateRestarting   = "restarting"   // exited; waiting out the backoff
	StateFailed       = "failed"       // crash-looping; still retried
	StateStopping     = "stopping"
	StateStopped      = "stopped"
	StateDisabled     = "disabled" // its setting is off
)

// exitedWhile records, for a run that ended, the state the restart policy
// chose and when the next start comes.
func exitedWhile(st *Status, exit *ExitInfo, state string, failures int, delay time.Duration) {
	st.Restarts++
	st.State, st.Ready, st.PID, st.LastExit = state, false, 0, exit
	st.NextStart = time.Now().Add(delay)
	st.Reason = fmt.Sprintf("exited (%s); restarting in %s", describeExit(exit), delay)
	if state == StateFailed {
		st.Reason = fmt.Sprintf("%d runs in a row ended (last: %s); retrying in %s", failures, describeExit(exit), delay)
	}
}

// update changes a status under its lock and wakes whoever waits on
// states, but only when something changed: waiters re-check on every wake.
func (s *Supervisor) update(svc *service, f func(st *Status)) {
	svc.mu.Lock()
	prev := svc.st
	f(&svc.st)
	if svc.st.State != prev.State {
		svc.st.Since = time.Now()
	}
	changed := svc.st != prev
	svc.mu.Unlock()
	if changed {
		s.notify()
	}
}

func (s *Supervisor) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// waitFor blocks until ready returns true (asked again on every state
// change) or stop is closed; it returns false on stop. ready must not
// change any state.
func (s *Supervisor) waitFor(stop <-chan struct{}, ready func() bool) bool {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if ready() {
			return true
		}
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

func describeExit(e *ExitInfo) string {
	var s string
	switch {
	case e.Error != "":
		return "start failed: " + e.Error
	case e.Signal != "":
		s = "killed by " + e.Signal
	default:
		s = fmt.Sprintf("exit code %d", e.Code)
	}
	if e.Cause != "" {
		s += ": " + e.Cause
	}
	return s
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}

func tailText(r *logs.Ring, n int) []string {
	var out []string
	for _, l := range r.Tail(n) {
		out = append(out, l.Text)
	}
	return out
}

func lastLines(r *logs.Ring, n int) string {
	t := tailText(r, n)
	if len(t) == 0 {
		return "(none)"
	}
	return strings.Join(t, " | ")
}

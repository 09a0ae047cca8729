package enginestate

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// State is where the engine is.
type State string

// The states. Running is the engine serving; the others are the engine on
// demand: stopped or paused while nobody uses it, and the steps between.
const (
	// Running: containerd and the services run (or start, at boot).
	Running State = "running"
	// Stopping: being stopped or paused because nobody used it; new
	// clients wait for what comes of it.
	Stopping State = "stopping"
	// Stopped: dockerd and containerd stopped (idle); the next client
	// wakes them.
	Stopped State = "stopped"
	// Paused: the engine's cgroup frozen (idle); the next client thaws
	// it.
	Paused State = "paused"
	// GivingBack: stopped or paused, and what it held being given back
	// (its cgroups' memory, the data store's free blocks); a wake ends it.
	GivingBack State = "giving back"
	// Waking: being started again (or thawed) for a client.
	Waking State = "waking"
	// WakeFailed: stopped, and the last wake failed; the next client tries
	// again.
	WakeFailed State = "wake failed"
	// Switching: PID 1 being replaced (a live version-pack switch, a
	// rollback): every client waits for the next engine.
	Switching State = "switching"
)

// transitions is every step the engine may take.
var transitions = map[State][]State{
	Running:    {Stopping, Switching},
	Stopping:   {Running, Stopped, Paused, Switching},
	Stopped:    {GivingBack, Waking, Switching},
	Paused:     {GivingBack, Waking, Stopping, Switching},
	GivingBack: {Stopped, Paused, Waking, Switching},
	Waking:     {Running, WakeFailed, Switching},
	WakeFailed: {Waking, Switching},
	Switching:  {Running},
}

// CanBecome reports whether the engine may go from s to next.
func (s State) CanBecome(next State) bool { return slices.Contains(transitions[s], next) }

// Idle reports whether the engine is held on purpose (stopped or paused,
// whatever step it is in), so that a client must wake it.
func (s State) Idle() bool {
	switch s {
	case Stopped, Paused, GivingBack, WakeFailed:
		return true
	}
	return false
}

// Known reports whether s is one of the states.
func (s State) Known() bool { _, ok := transitions[s]; return ok }

// Snapshot is a Machine's state, since when, why (a wake's failure, a
// switch's reason), and where a give-back returns to.
type Snapshot struct {
	State  State
	Since  time.Time
	Reason string
	// Back is the state a give-back returns to (Stopped or Paused).
	Back State
}

// Machine holds the engine's state. The zero Machine is not ready: use
// New.
type Machine struct {
	mu      sync.Mutex
	now     Snapshot
	changed chan struct{}
	// gen counts transitions, so a step can tell whether another came
	// between.
	gen uint64
}

// New is a Machine in state.
func New(state State) *Machine {
	return &Machine{now: Snapshot{State: state, Since: time.Now()}, changed: make(chan struct{})}
}

// Now is the state now.
func (m *Machine) Now() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// To moves the engine to next for reason, or refuses a step the table
// does not allow (the state stays). A give-back remembers where it
// returns to; leaving it for anything but a wake or a switch goes back
// there.
func (m *Machine) To(next State, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.to(next, reason)
}

func (m *Machine) to(next State, reason string) error {
	cur := m.now.State
	if !cur.CanBecome(next) {
		return fmt.Errorf("the engine cannot go from %s to %s", cur, next)
	}
	if cur == GivingBack && (next == Stopped || next == Paused) && next != m.now.Back {
		return fmt.Errorf("a give-back after %s cannot end in %s", m.now.Back, next)
	}
	back := State("")
	if next == GivingBack {
		back = cur
	}
	m.now = Snapshot{State: next, Since: time.Now(), Reason: reason, Back: back}
	m.gen++
	close(m.changed)
	m.changed = make(chan struct{})
	return nil
}

// Set makes the machine mirror another's state as it was reported (the
// holder following PID 1): it is taken as it comes, whatever came
// between, as long as it is a state. It reports whether it changed
// anything.
func (m *Machine) Set(s Snapshot) bool {
	if !s.State.Known() {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.now.State == s.State && m.now.Reason == s.Reason {
		return false
	}
	if s.Since.IsZero() {
		s.Since = time.Now()
	}
	m.now = s
	m.gen++
	close(m.changed)
	m.changed = make(chan struct{})
	return true
}

// Step moves to next when the state is one of from: the check and the
// step are one. It reports whether it moved.
func (m *Machine) Step(next State, reason string, from ...State) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(from, m.now.State) {
		return false
	}
	return m.to(next, reason) == nil
}

// Changed is closed at the next transition.
func (m *Machine) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Await waits until done, asked of the state now and after each
// transition, is true, or ctx ends.
func (m *Machine) Await(ctx context.Context, done func(Snapshot) bool) (Snapshot, error) {
	for {
		m.mu.Lock()
		now, ch := m.now, m.changed
		m.mu.Unlock()
		if done(now) {
			return now, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return now, ctx.Err()
		}
	}
}

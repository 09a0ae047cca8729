package enginestate

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// Every transition the table allows is taken; every other is refused and
// leaves the state as it was.
func TestTransitionsAsTheTableSays(t *testing.T) {
	all := []State{Running, Stopping, Stopped, Paused, GivingBack, Waking, WakeFailed, Switching}
	for _, from := range all {
		for _, to := range all {
			m := New(from)
			if from == GivingBack {
				m = New(Stopped)
				m.To(GivingBack, "")
			}
			err := m.To(to, "why")
			allowed := from.CanBecome(to) && !(from == GivingBack && to == Paused)
			if (err == nil) != allowed {
				t.Errorf("%s → %s: %v (allowed %v)", from, to, err, allowed)
			}
			if err != nil && m.Now().State != from {
				t.Errorf("%s → %s refused, but the state is %s", from, to, m.Now().State)
			}
		}
	}
}

// The life of an idle engine: stopped, given back, woken; paused, given
// back, thawed; a wake that fails, tried again; a switch from anywhere.
func TestIdleLife(t *testing.T) {
	m := New(Running)
	for _, step := range []State{Stopping, Stopped, GivingBack, Stopped, Waking, Running, Stopping, Paused, GivingBack, Paused, Waking, WakeFailed, Waking, Running, Switching, Running} {
		if err := m.To(step, ""); err != nil {
			t.Fatal(err)
		}
	}
	m = New(Paused)
	m.To(GivingBack, "")
	if err := m.To(Stopped, ""); err == nil {
		t.Fatal("a give-back after a pause ended in stopped")
	}
}

func TestStepOnlyFrom(t *testing.T) {
	m := New(Running)
	if m.Step(Waking, "", Stopped, Paused) {
		t.Fatal("stepped from running")
	}
	if !m.Step(Stopping, "idle", Running) || m.Now().State != Stopping || m.Now().Reason != "idle" {
		t.Fatalf("%+v", m.Now())
	}
}

// Await wakes at the transition it waits for, without sleeping; a
// context that ends first ends it.
func TestAwait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(Stopped)
		got := make(chan Snapshot, 1)
		go func() {
			s, _ := m.Await(context.Background(), func(s Snapshot) bool { return s.State == Running })
			got <- s
		}()
		synctest.Wait()
		m.To(Waking, "")
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("woke at waking")
		default:
		}
		m.To(Running, "")
		if s := <-got; s.State != Running {
			t.Fatalf("%+v", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := m.Await(ctx, func(s Snapshot) bool { return false }); err == nil {
			t.Fatal("an Await past its context returned no error")
		}
	})
}

func TestSetMirrors(t *testing.T) {
	m := New(Running)
	if !m.Set(Snapshot{State: Paused}) || m.Now().State != Paused {
		t.Fatal("a reported state was not taken")
	}
	if m.Set(Snapshot{State: "bogus"}) || m.Now().State != Paused {
		t.Fatal("a state that is none was taken")
	}
}

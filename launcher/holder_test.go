package launcher

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// The holder's tests run in a synctest bubble: time is the bubble's, and
// a test waits for every goroutine to be blocked (synctest.Wait) instead
// of sleeping. Dials are in-memory pipes.

// fakePID1 answers the holder's engine requests as PID 1 would, and
// reports its transitions to the holder as PID 1 does (before its
// answer, in order).
type fakePID1 struct {
	h            *holder
	wakes, stops atomic.Int32
	wakeErr      atomic.Pointer[string]
	busy         atomic.Pointer[string]
	wakeTakes    time.Duration
	// gate, when set, holds each answer until it is closed.
	gate chan struct{}
	// afterReport, when set, runs after a wake's report and before its
	// answer, once.
	afterReport func()
}

func (p *fakePID1) report(s enginestate.State, reason string) {
	p.h.mirror(wire.Engine{State: s, Since: time.Now(), Reason: reason})
}

func (p *fakePID1) ask(op wire.Op) (wire.Reply, error) {
	if p.gate != nil {
		<-p.gate
	}
	switch op {
	case wire.Wake:
		p.wakes.Add(1)
		p.report(enginestate.Waking, "")
		time.Sleep(p.wakeTakes) // the bubble's time: a wake's length, not a wait
		if e := p.wakeErr.Load(); e != nil {
			p.report(enginestate.WakeFailed, *e)
			if f := p.afterReport; f != nil {
				p.afterReport = nil
				f()
			}
			return wire.Reply{Err: &wire.Error{Message: *e}}, nil
		}
		p.report(enginestate.Running, "")
	case wire.StopIfIdle:
		p.stops.Add(1)
		if b := p.busy.Load(); b != nil {
			p.report(enginestate.Running, "")
			return wire.Reply{Busy: *b}, nil
		}
		p.report(enginestate.Stopped, "idle")
	}
	return wire.Reply{}, nil
}

func quietHolder(p *fakePID1) *holder {
	l := logrus.New()
	l.Out = io.Discard
	h := newHolder(p.ask, l)
	p.h = h
	return h
}

func pipeDial(context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	go func() { io.Copy(io.Discard, b); b.Close() }()
	return a, nil
}

func internalContext() context.Context { return engineclient.WithInternal(context.Background()) }

func (h *holder) stateNow() enginestate.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state.State
}

// runIdle runs the idle loop until the test's end.
func runIdle(t *testing.T, h *holder) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.idleLoop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// While the engine runs a client's dial goes through and is counted until
// it closes; ddinit's own are not counted.
func TestHolderCountsClients(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := quietHolder(&fakePID1{})
		c, err := h.dial(context.Background(), pipeDial)
		if err != nil {
			t.Fatal(err)
		}
		internal, err := h.dial(internalContext(), pipeDial)
		if err != nil {
			t.Fatal(err)
		}
		defer internal.Close()
		if h.clients != 1 {
			t.Fatalf("%d clients counted, want 1", h.clients)
		}
		c.Close()
		c.Close() // once only
		if h.clients != 0 {
			t.Fatalf("%d clients after the close", h.clients)
		}
	})
}

// Once nobody used it for idleStop the engine is stopped, not before;
// concurrent first dials share one wake and all get through; ddinit's own
// dial waits without waking it.
func TestHolderStopsAndWakesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{wakeTakes: 50 * time.Millisecond}
		h := quietHolder(p)
		h.setIdle(10*time.Second, 0)
		runIdle(t, h)
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if p.stops.Load() != 0 {
			t.Fatal("stopped before idleStop")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if h.stateNow() != enginestate.Stopped || p.stops.Load() != 1 {
			t.Fatalf("after idleStop: %s, %d stop requests", h.stateNow(), p.stops.Load())
		}
		internalDone := make(chan error, 1)
		go func() {
			c, err := h.dial(internalContext(), pipeDial)
			if c != nil {
				c.Close()
			}
			internalDone <- err
		}()
		time.Sleep(time.Minute)
		synctest.Wait()
		if p.wakes.Load() != 0 {
			t.Fatal("ddinit's own dial woke the engine")
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := h.dial(context.Background(), pipeDial)
				if err != nil {
					t.Error(err)
					return
				}
				c.Close()
			}()
		}
		wg.Wait()
		if p.wakes.Load() != 1 {
			t.Fatalf("%d wakes for 20 first dials, want 1", p.wakes.Load())
		}
		if err := <-internalDone; err != nil {
			t.Fatalf("ddinit's own dial once the engine woke: %v", err)
		}
	})
}

// A wake that fails is the waiters' error, naming the cause; the next
// dial tries again.
func TestHolderWakeFailureThenRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{}
		why := "dockerd: unable to configure the Docker daemon: bogus-option"
		p.wakeErr.Store(&why)
		h := quietHolder(p)
		p.report(enginestate.Stopping, "idle")
		p.report(enginestate.Stopped, "idle")
		_, err := h.dial(context.Background(), pipeDial)
		var held *dockerproxy.HeldError
		if !errors.As(err, &held) || !strings.Contains(err.Error(), "bogus-option") {
			t.Fatalf("a failed wake: %v", err)
		}
		p.wakeErr.Store(nil)
		c, err := h.dial(context.Background(), pipeDial)
		if err != nil || p.wakes.Load() != 2 {
			t.Fatalf("the next dial: %v after %d wakes", err, p.wakes.Load())
		}
		c.Close()
	})
}

// A busy engine (a container runs) is not stopped, and is asked again
// only a while later; a client connected keeps it from being asked at
// all.
func TestHolderBusyAndClientsKeepItUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{}
		busy := "1 container(s) running"
		p.busy.Store(&busy)
		h := quietHolder(p)
		h.setIdle(4*time.Second, 0)
		runIdle(t, h)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if h.stateNow() != enginestate.Running || p.stops.Load() != 1 {
			t.Fatalf("busy: state %s after %d asks", h.stateNow(), p.stops.Load())
		}
		time.Sleep(time.Second) // within the recheck (half of idleStop, at least 1 s)
		synctest.Wait()
		if p.stops.Load() != 1 {
			t.Fatalf("asked again %d times within the recheck", p.stops.Load()-1)
		}
		p.busy.Store(nil)
		c, _ := h.dial(context.Background(), pipeDial)
		asked := p.stops.Load()
		time.Sleep(time.Minute)
		synctest.Wait()
		if p.stops.Load() != asked {
			t.Fatal("asked to stop while a client was connected")
		}
		c.Close()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if h.stateNow() != enginestate.Stopped {
			t.Fatalf("after the client left and idleStop passed: %s", h.stateNow())
		}
	})
}

// While PID 1 is replaced every dial is held, ddinit's own too, until the
// new engine is ready; an idle stop answered meanwhile by the PID 1 on its
// way out does not end the hold, nor do its reports.
func TestHolderHoldsThroughAReplacement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{gate: make(chan struct{})}
		h := quietHolder(p)
		h.setIdle(time.Second, 0)
		runIdle(t, h)
		time.Sleep(2 * time.Second)
		synctest.Wait() // the idle stop is asked, its answer held
		h.suspend("switching version pack to pack2.iso")
		close(p.gate)
		type result struct {
			c   net.Conn
			err error
		}
		dialed := make(chan result, 2)
		for _, c := range []context.Context{context.Background(), internalContext()} {
			go func() {
				conn, err := h.dial(c, pipeDial)
				dialed <- result{conn, err}
			}()
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if !h.switching() {
			t.Fatalf("the holder is %s after the idle stop's answer; want it still switching", h.stateNow())
		}
		select {
		case r := <-dialed:
			t.Fatalf("a dial went through while PID 1 was replaced: %v", r.err)
		default:
		}
		h.open()
		for range 2 {
			r := <-dialed
			if r.err != nil {
				t.Fatalf("a held dial after the new engine came: %v", r.err)
			}
			r.c.Close()
		}
	})
}

// A dial held longer than holdFor through a replacement is answered with
// the switch as its reason; once ddinit stops, with that.
func TestHolderReplacementReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := quietHolder(&fakePID1{})
		h.suspend("switching version pack to pack2.iso")
		var held *dockerproxy.HeldError
		start := time.Now()
		if _, err := h.dial(context.Background(), pipeDial); !errors.As(err, &held) || !strings.HasPrefix(held.Reason, "switching version pack to pack2.iso: not done within") {
			t.Fatalf("a dial held past its deadline: %v", err)
		}
		if took := time.Since(start); took != holdFor {
			t.Fatalf("held %s, want holdFor (%s)", took, holdFor)
		}
		h.close()
		if _, err := h.dial(context.Background(), pipeDial); !errors.As(err, &held) || !strings.Contains(held.Reason, "stopping") {
			t.Fatalf("a dial once ddinit stops: %v", err)
		}
	})
}

// The holder's own steps follow the engine's table: a state PID 1
// reports is taken as it comes, and its steps do not cross a switch.
func TestHolderMirrorsPID1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{}
		h := quietHolder(p)
		for _, s := range []enginestate.State{enginestate.Stopping, enginestate.Paused, enginestate.GivingBack, enginestate.Paused} {
			p.report(s, "")
			if h.stateNow() != s {
				t.Fatalf("reported %s, mirrored %s", s, h.stateNow())
			}
		}
		h.suspend("switching")
		p.report(enginestate.Stopped, "")
		if h.stateNow() != enginestate.Switching {
			t.Fatalf("a report of the PID 1 going ended the switch: %s", h.stateNow())
		}
	})
}

// A client that comes after a failed wake begins a wake of its own, even
// while the failed one's answer is still on its way: that late answer
// does not fail the new client, which waits for its own wake.
func TestHolderLateAnswerOfAFailedWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{}
		why := "bogus-option"
		p.wakeErr.Store(&why)
		h := quietHolder(p)
		p.report(enginestate.Stopping, "idle")
		p.report(enginestate.Stopped, "idle")
		second := make(chan error, 1)
		p.afterReport = func() {
			// The first wake's failure is reported (its client is told);
			// its answer is not in yet. A second client comes, and this
			// time the wake works.
			synctest.Wait()
			p.wakeErr.Store(nil)
			p.wakeTakes = time.Second // still waking when the late answer comes
			go func() {
				c, err := h.dial(context.Background(), pipeDial)
				if c != nil {
					c.Close()
				}
				second <- err
			}()
			synctest.Wait()
		}
		if _, err := h.dial(context.Background(), pipeDial); err == nil || !strings.Contains(err.Error(), "bogus-option") {
			t.Fatalf("the first client: %v", err)
		}
		if err := <-second; err != nil {
			t.Fatalf("the second client got the first wake's failure: %v", err)
		}
		if p.wakes.Load() != 2 || h.stateNow() != enginestate.Running {
			t.Fatalf("%d wakes, state %s", p.wakes.Load(), h.stateNow())
		}
	})
}

// ddinit's own connections (its event streams) end when the engine leaves
// Running — stopping, or PID 1 being replaced — so that dockerd's stop
// does not wait on them; a client's stay with the engine they reached. A
// new one, held meanwhile, goes through once the engine runs again.
func TestHolderEndsItsOwnConnectionsWhenTheEngineStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakePID1{}
		h := quietHolder(p)
		// ended reports whether a read on c ends (the far side reads,
		// never writes: only a close ends it).
		ended := func(c net.Conn) bool {
			done := make(chan struct{})
			go func() { c.Read(make([]byte, 1)); close(done) }()
			synctest.Wait()
			select {
			case <-done:
				return true
			default:
				c.Close()
				<-done
				return false
			}
		}
		leave := []func(){
			func() { p.report(enginestate.Stopping, "idle") },
			func() { h.suspend("switching version pack to pack2.iso") },
		}
		for i, leaveRunning := range leave {
			own, err := h.dial(internalContext(), pipeDial)
			if err != nil {
				t.Fatal(err)
			}
			client, err := h.dial(context.Background(), pipeDial)
			if err != nil {
				t.Fatal(err)
			}
			leaveRunning()
			if !ended(own) {
				t.Fatalf("case %d: ddinit's own connection stayed open as the engine left Running", i)
			}
			if ended(client) {
				t.Fatalf("case %d: a client's connection was ended", i)
			}
			dialed := make(chan net.Conn, 1)
			go func() {
				c, err := h.dial(internalContext(), pipeDial)
				if err != nil {
					t.Error(err)
				}
				dialed <- c
			}()
			synctest.Wait()
			select {
			case <-dialed:
				t.Fatalf("case %d: an own dial went through while the engine was not running", i)
			default:
			}
			if i == 0 {
				p.report(enginestate.Running, "")
			} else {
				h.open()
			}
			again := <-dialed
			if ended(again) {
				t.Fatalf("case %d: the own connection made once the engine ran again was ended", i)
			}
		}
		if len(h.own) != 0 {
			t.Fatalf("%d own connections still kept after they were closed", len(h.own))
		}
	})
}

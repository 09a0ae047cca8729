package initd

import (
	"context"
	"errors"
	"github.com/ddinit/ddinit/engineclient"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/sirupsen/logrus"
)

// fakePID1 answers the holder's engine requests as PID 1 would.
type fakePID1 struct {
	wakes, stops atomic.Int32
	wakeErr      atomic.Pointer[string]
	busy         atomic.Pointer[string]
	wakeTakes    time.Duration
}

func (p *fakePID1) ask(op string) (engineReply, error) {
	switch op {
	case "wake":
		p.wakes.Add(1)
		time.Sleep(p.wakeTakes)
		if e := p.wakeErr.Load(); e != nil {
			return engineReply{Error: *e}, nil
		}
	case "stop-if-idle":
		p.stops.Add(1)
		if b := p.busy.Load(); b != nil {
			return engineReply{Busy: *b}, nil
		}
	}
	return engineReply{}, nil
}

func quietHolder(p *fakePID1) *holder {
	l := logrus.New()
	l.Out = io.Discard
	return newHolder(p.ask, l)
}

func pipeDial(context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	go func() { io.Copy(io.Discard, b); b.Close() }()
	return a, nil
}

// While the engine runs a client's dial goes through and is counted until
// it closes; ddinit's own are not counted.
func TestHolderCountsClients(t *testing.T) {
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
}

// Once nobody used it for idleStop the engine is stopped; concurrent first
// dials share one wake and all get through; ddinit's own dial waits
// without waking it.
func TestHolderStopsAndWakesOnce(t *testing.T) {
	p := &fakePID1{wakeTakes: 50 * time.Millisecond}
	h := quietHolder(p)
	h.setIdleStop(100 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.idleLoop(ctx)
	waitState(t, h, engineStopped)
	if p.stops.Load() != 1 {
		t.Fatalf("%d stop requests", p.stops.Load())
	}
	internalDone := make(chan error, 1)
	go func() {
		c, err := h.dial(internalContext(), pipeDial)
		if c != nil {
			c.Close()
		}
		internalDone <- err
	}()
	time.Sleep(100 * time.Millisecond)
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
}

// A wake that fails is the waiters' error, naming the cause; the next
// dial tries again.
func TestHolderWakeFailureThenRetry(t *testing.T) {
	p := &fakePID1{}
	why := "dockerd: unable to configure the Docker daemon: bogus-option"
	p.wakeErr.Store(&why)
	h := quietHolder(p)
	h.mu.Lock()
	h.set(engineStopped)
	h.mu.Unlock()
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
}

// A busy engine (a container runs) is not stopped, and is asked again
// later; a client connected keeps it from being asked at all.
func TestHolderBusyAndClientsKeepItUp(t *testing.T) {
	p := &fakePID1{}
	busy := "1 container(s) running"
	p.busy.Store(&busy)
	h := quietHolder(p)
	h.setIdleStop(50 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.idleLoop(ctx)
	time.Sleep(400 * time.Millisecond)
	h.mu.Lock()
	state := h.state
	h.mu.Unlock()
	if state != engineRunning || p.stops.Load() == 0 {
		t.Fatalf("busy: state %s after %d asks", state, p.stops.Load())
	}
	p.busy.Store(nil)
	c, _ := h.dial(context.Background(), pipeDial)
	asked := p.stops.Load()
	time.Sleep(1500 * time.Millisecond)
	if p.stops.Load() != asked {
		t.Fatal("asked to stop while a client was connected")
	}
	c.Close()
	waitState(t, h, engineStopped)
}

func waitState(t *testing.T, h *holder, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h.mu.Lock()
		s := h.state
		h.mu.Unlock()
		if s == want {
			return
		}
	}
	t.Fatalf("the holder never became %s", want)
}

func internalContext() context.Context { return engineclient.WithInternal(context.Background()) }

// While PID 1 is replaced every dial is held, ddinit's own too, until the
// new engine is ready; an idle stop answered meanwhile by the PID 1 on its
// way out does not end the hold.
func TestHolderHoldsThroughAReplacement(t *testing.T) {
	release := make(chan struct{})
	var asked atomic.Int32
	p := &fakePID1{}
	h := quietHolder(p)
	h.ask = func(op string) (engineReply, error) {
		asked.Add(1)
		<-release // the idle stop is under way when the switch begins
		return p.ask(op)
	}
	h.setIdleStop(10 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.idleLoop(ctx)
	waitFor(t, "the idle stop to be asked", func() bool { return asked.Load() == 1 })
	h.suspend("switching version pack to pack2.iso")
	close(release)
	type result struct {
		c   net.Conn
		err error
	}
	dialed := make(chan result, 2)
	for _, c := range []context.Context{context.Background(), engineclient.WithInternal(context.Background())} {
		go func() {
			conn, err := h.dial(c, pipeDial)
			dialed <- result{conn, err}
		}()
	}
	time.Sleep(600 * time.Millisecond) // the idle loop's answer, and two ticks
	if !h.switching() {
		t.Fatalf("the holder is %s after the idle stop's answer; want it still switching", h.state)
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
}

// A dial held longer than holdFor through a replacement is answered with
// the switch as its reason.
func TestHolderReplacementReason(t *testing.T) {
	defer func(d time.Duration) { holdFor = d }(holdFor)
	holdFor = 100 * time.Millisecond
	h := quietHolder(&fakePID1{})
	h.suspend("switching version pack to pack2.iso")
	var held *dockerproxy.HeldError
	if _, err := h.dial(context.Background(), pipeDial); !errors.As(err, &held) || !strings.HasPrefix(held.Reason, "switching version pack to pack2.iso: not done within") {
		t.Fatalf("a dial held past its deadline: %v", err)
	}
	h.close()
	if _, err := h.dial(context.Background(), pipeDial); !errors.As(err, &held) || !strings.Contains(held.Reason, "stopping") {
		t.Fatalf("a dial once ddinit stops: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

package steps

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Step is one step of a life with argument T (what the step acts on).
type Step[T any] struct {
	// Name is the step's name in the log and in the boot's phases.
	Name string
	// Doing and Undoing say what is happening while the step and its
	// undo run (PID 1's /status shows them).
	Doing, Undoing string
	// Do does the step and returns how to undo it (nil: nothing to undo).
	// Its undo is kept even when it fails: what it set up before the
	// failure is undone with the rest.
	Do func(T) (undo func() error, err error)
	// Optional: a failure is logged and the life goes on without what the
	// step would have set up.
	Optional bool
}

// Runner runs tables of steps and keeps their undos.
type Runner struct {
	// Log is told each step done, failed and undone.
	Log logrus.FieldLogger
	// What names the steps in the log ("launch step", "boot phase").
	What string
	// Begin, when set, is told each step (and each undo) as it begins.
	Begin func(name, doing string)
	// Done, when set, is told each step done and how long it took.
	Done func(name string, took time.Duration)

	mu    sync.Mutex
	undos []undo
}

type undo struct {
	name, doing string
	fn          func() error
}

// Run runs steps in order with arg, keeping each one's undo; it stops at
// the first that fails (and is not optional) and returns its error.
func Run[T any](r *Runner, steps []Step[T], arg T) error {
	for _, s := range steps {
		if r.Begin != nil {
			r.Begin(s.Name, s.Doing)
		}
		start := time.Now()
		fn, err := s.Do(arg)
		if fn != nil {
			r.mu.Lock()
			r.undos = append(r.undos, undo{name: s.Name, doing: s.Undoing, fn: fn})
			r.mu.Unlock()
		}
		if err != nil && s.Optional {
			r.Log.WithError(err).WithField("step", s.Name).Error(r.What + " failed; going on without it")
			continue
		}
		if err != nil {
			r.Log.WithError(err).WithField("step", s.Name).Error(r.What + " failed")
			return err
		}
		took := time.Since(start)
		if r.Done != nil {
			r.Done(s.Name, took)
		}
		r.Log.WithFields(logrus.Fields{"step": s.Name, "ms": float64(took.Microseconds()) / 1000}).Info(r.What + " done")
	}
	return nil
}

// Undos are the undos of the steps done, to run newest first.
type Undos struct {
	undos []undo
	log   logrus.FieldLogger
	what  string
	begin func(name, doing string)
}

// Take hands over the undos of the steps done so far: Undo no longer
// runs them (they are held for longer than the steps after them).
func (r *Runner) Take() Undos {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := Undos{undos: r.undos, log: r.Log, what: r.What, begin: r.Begin}
	r.undos = nil
	return u
}

// Undo runs the undos of every step done, newest first, once; an undo
// that fails is logged and the next one runs. It returns their errors.
func (r *Runner) Undo() error { return r.Take().Run() }

// Run runs the undos newest first and returns their errors, joined.
func (u Undos) Run() error {
	var errs []error
	for i := len(u.undos) - 1; i >= 0; i-- {
		d := u.undos[i]
		if u.begin != nil && d.doing != "" {
			u.begin(d.name, d.doing)
		}
		if err := d.fn(); err != nil {
			u.log.WithError(err).WithField("step", d.name).Warn(u.what + " not wholly undone")
			errs = append(errs, err)
			continue
		}
		u.log.WithField("step", d.name).Debug(u.what + " undone")
	}
	return errors.Join(errs...)
}

// Quiet wraps an undo that cannot fail.
func Quiet(fn func()) func() error {
	if fn == nil {
		return nil
	}
	return func() error { fn(); return nil }
}

// Group is the goroutines a life started: each is given the group's
// context, and Stop ends the context and waits for every one of them, so
// that none outlives its owner. The zero Group is ready.
type Group struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (g *Group) init() {
	g.once.Do(func() { g.ctx, g.cancel = context.WithCancel(context.Background()) })
}

// Go runs fn in a goroutine of the group.
func (g *Group) Go(fn func(ctx context.Context)) {
	g.init()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
}

// Context is the group's context: ended by Stop.
func (g *Group) Context() context.Context {
	g.init()
	return g.ctx
}

// Stop ends the group's context and waits for its goroutines.
func (g *Group) Stop() {
	g.init()
	g.cancel()
	g.wg.Wait()
}

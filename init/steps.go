package initd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus"
)

// launchStep is one step of `ddinit run`'s life in the distro: its name
// (in the log, as PID 1's phases are), what it does, and how to undo it.
// A step that sets nothing up returns a nil undo.
type launchStep struct {
	name string
	do   func(l *launcher, pid int, sockets map[string]string) (undo func(), err error)
	// optional: a failure is logged and the launch goes on without what
	// the step would have set up (its undo still runs).
	optional bool
}

// ddinit run's life in the distro is these three tables: holdSteps (what
// is held for the whole life and released after its last line), then
// startSteps, then, once PID 1 (its root in place) reports the sockets of
// its services, socketSteps. Once PID 1 has exited, every step done is
// undone in reverse.
var holdSteps = []launchStep{
	// One ddinit per data store: a second one would boot on the same
	// images, volumes and cache.
	{name: "lock data store", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		ds, err := mounts.OpenDataStore(l.cfg.DataDir)
		if err != nil {
			return nil, err
		}
		lock, err := mounts.LockExclusive(ds.Path(".ddinit.lock"), "data store "+ds.Dir)
		if err != nil {
			return nil, err
		}
		l.ds = ds
		// PID 1 reports (and logs, once the log is open) what was set aside.
		l.cfg.DataStoreRecovered = ds.Recovered
		return func() { lock.Close() }, nil
	}},
	{name: "open log", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		f, err := logs.OpenRotating(l.ds.Path("log/ddinit.log"), logs.MaxFileBytes, logs.KeepFiles)
		if err != nil {
			return nil, err
		}
		stop := logs.AddFile(l.log, f)
		return func() {
			stop()
			// The last lines (a boot's failure) are on disk before exit;
			// an error here has nowhere left to be told.
			_ = f.Sync()
			_ = f.Close()
		}, nil
	}},
	// Opened here and handed to each PID 1, which answers on them from
	// its first moment: the frontend can watch the boot. They stay open
	// from one PID 1 to the next (a live switch, a rollback): nobody is
	// refused in between.
	{name: "control sockets", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		if err := os.MkdirAll(l.cfg.RunDir, 0o755); err != nil {
			return nil, fmt.Errorf("run directory %s: %w", l.cfg.RunDir, err)
		}
		files, err := l.openControlSockets()
		l.controlFiles = files
		return l.closeControlSockets, err
	}},
	// The exposed sockets are opened once PID 1 reports its services'
	// (socketSteps' expose), and then kept, holding clients, while a next
	// PID 1 replaces it: they close when ddinit run ends.
	{name: "exposed sockets", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		return l.closeForwarders, nil
	}},
}

var startSteps = []launchStep{
	{name: "start PID 1", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		c, err := l.startPID1()
		if err != nil {
			return nil, err
		}
		l.child = c
		return func() {
			l.drives.Close()
			// Mount points PID 1 made on the distro's file system: its
			// mounts went with its namespace, the empty directories are
			// left to remove.
			for _, d := range []string{"rootfs", "upper", "layers"} {
				removeEmptyTree(filepath.Join(l.cfg.RunDir, d))
			}
		}, nil
	}},
}

var socketSteps = []launchStep{
	// The network: a failure leaves the engine running without one, and
	// says so, rather than stopping it.
	{name: "network", optional: true, do: func(l *launcher, pid int, sockets map[string]string) (func(), error) {
		return l.unwireNetwork, l.wireNetwork(pid, sockets)
	}},
	// Names for containers: the distro's resolver followed live, and the
	// names of the Windows host and the distro. Without it, containers get
	// a copy of the distro's resolver file.
	{name: "dns", optional: true, do: func(l *launcher, pid int, _ map[string]string) (func(), error) {
		return l.serveDNS(pid)
	}},
	// What PID 1 tells: the proxy plan (a proxy on the distro's loopback
	// relayed into the namespace; the variables new containers get).
	{name: "follow PID 1", do: func(l *launcher, pid int, _ map[string]string) (func(), error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.followPID1(ctx, pid)
		}()
		return func() {
			cancel()
			<-done
			l.closeRelays()
		}, nil
	}},
	{name: "follow drives and devices", do: func(l *launcher, pid int, _ map[string]string) (func(), error) {
		return l.follow(pid), nil
	}},
	{name: "expose sockets", do: func(l *launcher, pid int, sockets map[string]string) (func(), error) {
		return l.unexpose, l.expose(pid, sockets)
	}},
	// The engine on demand: stopped once nobody used it for idleStop.
	{name: "engine on demand", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.hold.idleLoop(ctx)
		}()
		return func() { cancel(); <-done }, nil
	}},
	// The busy part of this process's life is over: it now relays logs and
	// connections. The copy for the distros' proxies waits until the boot
	// has settled: it is not on the way to _ping.
	{name: "settle", do: func(l *launcher, _ int, _ map[string]string) (func(), error) {
		l.background(func(ctx context.Context) {
			if settle(ctx, l.log) {
				l.publishBinary()
				returnIdleHeap(ctx)
			}
		})
		return l.stopBackground, nil
	}},
}

// undoer keeps the undos of the steps done, to run in reverse.
type undoer struct {
	names []string
	undos []func()
}

// runSteps runs steps in order, keeping each one's undo; it stops at the
// first that fails and returns its error (what it set up is undone with
// the rest).
func (l *launcher) runSteps(steps []launchStep, pid int, sockets map[string]string) error {
	for _, s := range steps {
		start := time.Now()
		undo, err := s.do(l, pid, sockets)
		l.pushUndo(s.name, undo)
		if err != nil && s.optional {
			l.log.WithError(err).WithField("step", s.name).Error("launch step failed; going on without it")
			continue
		}
		if err != nil {
			l.log.WithError(err).WithField("step", s.name).Error("launch step failed")
			return err
		}
		l.log.WithFields(logrus.Fields{"step": s.name, "ms": float64(time.Since(start).Microseconds()) / 1000}).Info("launch step done")
	}
	return nil
}

// pushUndo keeps how to undo a step (nothing, for a nil undo).
func (l *launcher) pushUndo(name string, undo func()) {
	if undo == nil {
		return
	}
	l.mu.Lock()
	l.done.names = append(l.done.names, name)
	l.done.undos = append(l.done.undos, undo)
	l.mu.Unlock()
}

// undoAll undoes every step done, newest first, once.
func (l *launcher) undoAll() {
	l.takeUndos().undo(l.log)
}

// takeUndos hands over the undos of the steps done so far: they are no
// longer undone by undoAll.
func (l *launcher) takeUndos() undoer {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.done
	l.done = undoer{}
	return d
}

// undo runs the undos, newest first.
func (d undoer) undo(log *logrus.Entry) {
	for i := len(d.undos) - 1; i >= 0; i-- {
		log.WithField("step", d.names[i]).Debug("launch step undone")
		d.undos[i]()
	}
}

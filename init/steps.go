package initd

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"path/filepath"
)

// launchStep is one step of `ddinit run`'s life in the distro: its name
// (in the log, as PID 1's phases are), what it does, and how to undo it.
// A step that sets nothing up returns a nil undo.
type launchStep struct {
	name string
	do   func(l *launcher, pid int, sockets map[string]string) (undo func(), err error)
}

// ddinit run's life in the distro is these two tables: startSteps, then,
// once PID 1 (its root in place) reports the sockets of its services,
// socketSteps. Before them Run has checked the config, locked the data
// store and opened the log (what the steps log to). Once PID 1 has
// exited, every step done is undone in reverse.
var startSteps = []launchStep{
	// Opened here and handed to PID 1, which answers on them from its
	// first moment: the frontend can watch the boot.
	{"control sockets", func(l *launcher, _ int, _ map[string]string) (func(), error) {
		files, err := l.openControlSockets()
		l.controlFiles = files
		return l.removeUnixSockets, err
	}},
	{"start PID 1", func(l *launcher, _ int, _ map[string]string) (func(), error) {
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
	{"network", func(l *launcher, pid int, sockets map[string]string) (func(), error) {
		l.wireNetwork(pid, sockets)
		return l.unwireNetwork, nil
	}},
	{"follow drives and devices", func(l *launcher, pid int, _ map[string]string) (func(), error) {
		return l.follow(pid), nil
	}},
	{"expose sockets", func(l *launcher, pid int, sockets map[string]string) (func(), error) {
		return l.closeForwarders, l.expose(pid, sockets)
	}},
	// The busy part of this process's life is over: it now relays logs and
	// connections. The copy for the distros' proxies waits until the boot
	// has settled: it is not on the way to _ping.
	{"settle", func(l *launcher, _ int, _ map[string]string) (func(), error) {
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
	l.mu.Lock()
	d := l.done
	l.done = undoer{}
	l.mu.Unlock()
	for i := len(d.undos) - 1; i >= 0; i-- {
		d.undos[i]()
		l.log.WithField("step", d.names[i]).Debug("launch step undone")
	}
}

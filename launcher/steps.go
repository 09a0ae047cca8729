package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddinit/ddinit/idleheap"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/steps"
)

// ddinit run's life in the distro is these three tables: holdSteps (what
// is held for the whole life and released after its last line), then
// startSteps, then, once PID 1 (its root in place) reports the sockets of
// its services, socketSteps. Once PID 1 has exited, every step done is
// undone in reverse.
var holdSteps = []steps.Step[*launcher]{
	// One ddinit per data store: a second one would boot on the same
	// images, volumes and cache. The lock first: only its holder may set
	// aside what it finds wrong in the store's layout.
	{Name: "lock data store", Do: func(l *launcher) (func() error, error) {
		lock, err := mounts.LockDataStore(l.cfg.DataDir)
		if err != nil {
			return nil, err
		}
		ds, err := mounts.OpenDataStore(l.cfg.DataDir)
		if err != nil {
			lock.Close()
			return nil, err
		}
		l.ds = ds
		return lock.Close, nil
	}},
	{Name: "open log", Do: func(l *launcher) (func() error, error) {
		f, err := logs.OpenRotating(l.ds.Path("log/ddinit.log"), logs.MaxFileBytes, logs.KeepFiles)
		if err != nil {
			return nil, err
		}
		stop := logs.AddFile(l.log, f)
		return func() error {
			stop()
			// The last lines (a boot's failure) are on disk before exit;
			// an error here has nowhere left to be told.
			_ = f.Sync()
			return f.Close()
		}, nil
	}},
	// Opened here and handed to each PID 1, which answers on them from
	// its first moment: the frontend can watch the boot. They stay open
	// from one PID 1 to the next (a live switch, a rollback): nobody is
	// refused in between.
	{Name: "control sockets", Do: func(l *launcher) (func() error, error) {
		if err := os.MkdirAll(l.cfg.RunDir, 0o755); err != nil {
			return nil, fmt.Errorf("run directory %s: %w", l.cfg.RunDir, err)
		}
		files, err := l.openControlSockets()
		l.controlFiles = files
		return steps.Quiet(l.closeControlSockets), err
	}},
	// The exposed sockets are opened once PID 1 reports its services'
	// (socketSteps' expose), and then kept, holding clients, while a next
	// PID 1 replaces it: they close when ddinit run ends.
	{Name: "exposed sockets", Do: func(l *launcher) (func() error, error) {
		return steps.Quiet(l.closeForwarders), nil
	}},
	// The CLI tools are offered once a boot has settled (socketSteps'
	// settle) and kept through a live switch: taken down when ddinit run
	// ends.
	{Name: "CLI tools", Do: func(l *launcher) (func() error, error) {
		return steps.Quiet(l.withdrawCLITools), nil
	}},
	// The Kubernetes cluster is published while each PID 1 says it is on
	// (its kubernetes-state messages), and withdrawn when that PID 1 ends
	// (start PID 1's undo); here, what a run that crashed left offered is
	// withdrawn, and all of it again when ddinit run ends.
	{Name: "kubernetes", Do: func(l *launcher) (func() error, error) {
		l.kube.Close()
		return steps.Quiet(l.kube.Close), nil
	}},
}

var startSteps = []steps.Step[*launcher]{
	{Name: "start PID 1", Do: func(l *launcher) (func() error, error) {
		c, err := l.startPID1()
		if err != nil {
			return nil, err
		}
		l.child = c
		return func() error {
			// Its socket ended with it; what its messages set up goes
			// (the next PID 1, if any, reports its own).
			l.relays.close()
			l.kube.Close()
			l.bg.Stop()
			l.mu.Lock()
			conn := l.conn
			l.conn = nil
			l.mu.Unlock()
			conn.Close()
			// Mount points PID 1 made on the distro's file system: its
			// mounts went with its namespace, the empty directories are
			// left to remove.
			for _, d := range []string{"rootfs", "upper", "layers"} {
				removeEmptyTree(filepath.Join(l.cfg.RunDir, d))
			}
			return nil
		}, nil
	}},
}

// socketArgs is what the socket steps act on: PID 1 (its pid) and the
// sockets of its services it reported.
type socketArgs struct {
	l       *launcher
	pid     int
	sockets map[string]string
}

var socketSteps = []steps.Step[socketArgs]{
	// The network: a failure leaves the engine running without one, and
	// says so, rather than stopping it.
	{Name: "network", Optional: true, Do: func(a socketArgs) (func() error, error) {
		return steps.Quiet(a.l.unwireNetwork), a.l.wireNetwork(a.pid, a.sockets)
	}},
	// Names for containers: the distro's resolver followed live, and the
	// names of the Windows host and the distro. Without it, containers get
	// a copy of the distro's resolver file.
	{Name: "dns", Optional: true, Do: func(a socketArgs) (func() error, error) {
		undo, err := a.l.serveDNS(a.pid)
		return steps.Quiet(undo), err
	}},
	{Name: "follow drives and devices", Do: func(a socketArgs) (func() error, error) {
		return steps.Quiet(a.l.follow(a.pid)), nil
	}},
	{Name: "expose sockets", Do: func(a socketArgs) (func() error, error) {
		return steps.Quiet(a.l.unexpose), a.l.expose(a.pid, a.sockets)
	}},
	// The engine on demand: stopped once nobody used it for idleStop.
	{Name: "engine on demand", Do: func(a socketArgs) (func() error, error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.l.hold.idleLoop(ctx)
		}()
		return func() error { cancel(); <-done; return nil }, nil
	}},
	// The busy part of this process's life is over: it now relays logs and
	// connections. The copy for the distros' proxies and the CLI tools
	// wait until the boot has settled: they are not on the way to _ping.
	{Name: "settle", Do: func(a socketArgs) (func() error, error) {
		l := a.l
		l.bg.Go(func(ctx context.Context) {
			if idleheap.Settle(ctx, l.log) {
				l.publishBinary()
				l.offerCLITools()
				idleheap.Watch(ctx)
			}
		})
		return nil, nil
	}},
}

package services

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/containerd/containerd"
	"github.com/sirupsen/logrus"
)

// fakeTask is a service's run that the test ends: exit() as if the
// process ended, or through the signals the supervisor sends.
type fakeTask struct {
	pid      int
	exits    chan containerd.ExitStatus
	signals  chan syscall.Signal
	finished atomic.Bool
}

func (f *fakeTask) PID() int                             { return f.pid }
func (f *fakeTask) Exited() <-chan containerd.ExitStatus { return f.exits }
func (f *fakeTask) Finish()                              { f.finished.Store(true) }
func (f *fakeTask) Abandon()                             {}

func (f *fakeTask) Signal(sig syscall.Signal) error {
	f.signals <- sig
	f.exit(128 + int(sig))
	return nil
}

func (f *fakeTask) exit(code int) {
	select {
	case f.exits <- *containerd.NewExitStatus(uint32(code), time.Now(), nil):
	default: // it has already exited
	}
}

// fakeSupervisor runs defs with a fake containerd and fake tasks; every
// started run is sent on the returned channel. It must be called inside a
// synctest bubble: the tests read the supervisor's state once every
// goroutine in it is blocked, never while a start is half recorded.
func fakeSupervisor(t *testing.T, defs ...Definition) (*Supervisor, chan *fakeTask) {
	t.Helper()
	return fakeSupervisorReading(t, nil, defs...)
}

// fakeSupervisorReading is fakeSupervisor whose liveness reads processes'
// CPU times with readTimes (when not nil).
func fakeSupervisorReading(t *testing.T, readTimes func(pid int) (cpuTimes, error), defs ...Definition) (*Supervisor, chan *fakeTask) {
	t.Helper()
	quiet := logrus.New()
	quiet.Out = io.Discard
	s, err := New(Config{
		Restart: RestartPolicy{Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Hour}, CrashLoop: 3},
		Log:     logrus.NewEntry(quiet),
	}, defs)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan *fakeTask, 64)
	pid := 100
	s.startTask = func(d *daemon, svc *service) (task, error) {
		pid++
		f := &fakeTask{pid: pid, exits: make(chan containerd.ExitStatus, 1), signals: make(chan syscall.Signal, 4)}
		started <- f
		return f, nil
	}
	if readTimes != nil {
		s.readCPUTimes = readTimes
	}
	s.cur = &daemon{down: make(chan struct{}), exited: make(chan struct{})}
	s.ctrd.st.State, s.ctrd.st.Ready = StateRunning, true
	close(s.monitor) // no containerd to watch
	for _, svc := range s.order {
		if svc.status().State == StateDisabled {
			close(svc.done)
			continue
		}
		go s.run(svc)
	}
	t.Cleanup(s.Stop)
	return s, started
}

func def(name string, deps ...string) Definition {
	return Definition{Name: name, Required: true, DependsOn: deps, StopTimeout: time.Second}
}

// next is the next run started within a minute of the bubble's time,
// once the supervisor has recorded it.
func next(t *testing.T, started chan *fakeTask) *fakeTask {
	t.Helper()
	select {
	case f := <-started:
		synctest.Wait()
		return f
	case <-time.After(time.Minute):
		t.Fatal("no run started")
		return nil
	}
}

// eventually checks cond each time the bubble's goroutines are all
// blocked, for up to a minute of the bubble's time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		synctest.Wait()
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}

// A service that keeps exiting is restarted with growing delays, reported
// failed once it is a crash loop, and healthy again once a run lasts.
func TestRunLoopRestartsWithBackoffAndReportsACrashLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, started := fakeSupervisor(t, def("svc"))
		svc := s.find("svc")
		var gaps []time.Duration
		last := time.Now()
		for i := range 4 {
			f := next(t, started)
			if i > 0 {
				gaps = append(gaps, time.Since(last))
			}
			eventually(t, "running", func() bool { return svc.status().Ready })
			last = time.Now()
			f.exit(1)
		}
		st := svc.status()
		eventually(t, "failed", func() bool { st = svc.status(); return st.State == StateFailed })
		if st.Restarts != 4 || st.LastExit == nil || st.LastExit.Code != 1 || !strings.Contains(st.Reason, "4 runs in a row ended") {
			t.Fatalf("after four failed runs: %+v", st)
		}
		if ok, reason := s.Health(); ok || !strings.HasPrefix(reason, "svc is failing: ") {
			t.Fatalf("health while crash-looping: %v %q", ok, reason)
		}
		// The bubble's clock is exact: each delay is the backoff's, doubling
		// from Initial and capped at Max.
		if want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}; !slices.Equal(gaps, want) {
			t.Fatalf("restart delays %v, want %v", gaps, want)
		}
		next(t, started)
		eventually(t, "running again", func() bool { return svc.status().State == StateRunning })
		if ok, _ := s.Health(); !ok {
			t.Fatal("not healthy once the service runs")
		}
	})
}

// A service waits for what it depends on; a restart asked for stops the
// run with SIGTERM and starts a new one at once; a stop ends it.
func TestRunLoopDependenciesRestartAndStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, started := fakeSupervisor(t, def("app", "db"), def("db"))
		db, app := s.find("db"), s.find("app")
		first := next(t, started)
		eventually(t, "db ready", func() bool { return db.status().Ready })
		second := next(t, started)
		if first.pid != 101 || second.pid != 102 || app.status().PID != 102 {
			t.Fatalf("start order: db %d, app %d (status %d)", first.pid, second.pid, app.status().PID)
		}
		if err := s.Restart("app"); err != nil {
			t.Fatal(err)
		}
		if sig := <-second.signals; sig != syscall.SIGTERM {
			t.Fatalf("a restart sent %v", sig)
		}
		third := next(t, started)
		eventually(t, "app restarted", func() bool { st := app.status(); return st.PID == third.pid && st.Ready && st.Restarts == 1 })
		if !second.finished.Load() {
			t.Fatal("the stopped run was not deleted")
		}
		if err := s.Restart("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("unknown service: %v", err)
		}
		s.Stop()
		if st := app.status(); st.State != StateStopped || !third.finished.Load() {
			t.Fatalf("after stop: %+v", st)
		}
	})
}

// A service that stops answering while its process waits for a CPU all
// the time is shown unresponsive, waiting, and killed only after
// starvedLimit KillAfters; the times read are its own process's.
func TestStarvedServiceIsKilledLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := def("api")
		d.Live = &Probe{Socket: filepath.Join(t.TempDir(), "gone.sock"), Path: "/livez"}
		d.LiveTiming = LivenessTiming{Period: time.Second, Timeout: time.Second, KillAfter: 10 * time.Second}
		began := time.Now()
		const apiPid = 101 // fakeSupervisor's first run
		s, started := fakeSupervisorReading(t, func(pid int) (cpuTimes, error) {
			if pid != apiPid {
				return cpuTimes{}, fmt.Errorf("pid %d is not the service's", pid)
			}
			return cpuTimes{waited: time.Since(began)}, nil
		}, d)
		run := next(t, started)
		if run.pid != apiPid {
			t.Fatalf("the run's pid is %d, not %d", run.pid, apiPid)
		}
		api := s.find("api")
		eventually(t, "api unresponsive, waiting for a CPU", func() bool {
			st := api.status()
			return st.State == StateUnresponsive && strings.Contains(st.Reason, "of it waiting for a CPU")
		})
		select {
		case <-run.signals:
			if at := time.Since(began); at < starvedLimit*10*time.Second {
				t.Fatalf("killed after %s; want %s", at, starvedLimit*10*time.Second)
			}
		case <-time.After(time.Minute):
			t.Fatal("never killed")
		}
	})
}

// A setting switches its services on and off without touching the others.
func TestSwitchStartsAndStopsAsettingsServices(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		kube := def("kubelet", "engine")
		kube.Setting, kube.Required = "kubernetes", false
		s, started := fakeSupervisor(t, def("engine"), kube)
		engine := next(t, started)
		k := s.find("kubelet")
		eventually(t, "kubelet disabled", func() bool { return k.status().State == StateDisabled })
		s.Switch("kubernetes", true)
		run := next(t, started)
		eventually(t, "kubelet running", func() bool { return k.status().Ready })
		s.Switch("kubernetes", false)
		if st := k.status(); st.State != StateDisabled || !run.finished.Load() {
			t.Fatalf("switched off: %+v", st)
		}
		if s.find("engine").status().PID != engine.pid {
			t.Fatal("switching kubernetes touched the engine")
		}
	})
}

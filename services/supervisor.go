package services

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/logs"
)

// mark tells Mark of a step now.
func (s *Supervisor) mark(event string) {
	if s.cfg.Mark != nil {
		s.cfg.Mark(event, time.Now())
	}
}

// New prepares a supervisor for defs.
func New(cfg Config, defs []Definition) (*Supervisor, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "services.ddinit"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = DefaultCgroupParent
	}
	if cfg.Restart.Backoff == (Backoff{}) {
		cfg.Restart.Backoff = DefaultBackoff
	}
	if cfg.Restart.CrashLoop <= 0 {
		cfg.Restart.CrashLoop = DefaultRestartPolicy.CrashLoop
	}
	cfg.Liveness = cfg.Liveness.or(DefaultLiveness)
	if cfg.Spawner == nil {
		cfg.Spawner = DirectSpawner{}
	}
	ordered, err := StartOrder(defs)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{
		cfg:     cfg,
		ctx:     namespaces.WithNamespace(context.Background(), cfg.Namespace),
		changed: make(chan struct{}),
		stopAll: make(chan struct{}),
		monitor: make(chan struct{}),
	}
	s.startTask = s.startContainerdTask
	s.readCPUTimes = readCPUTimes
	if s.ctrd, err = s.newService(Definition{Name: "containerd", Required: true}); err != nil {
		return nil, err
	}
	for _, d := range ordered {
		svc, err := s.newService(d)
		if err != nil {
			return nil, err
		}
		if d.Setting != "" && !cfg.Settings[d.Setting] {
			svc.st.State, svc.st.Reason = StateDisabled, fmt.Sprintf("setting %q is off", d.Setting)
		}
		s.order = append(s.order, svc)
	}
	return s, nil
}

func (s *Supervisor) newService(d Definition) (*service, error) {
	svc := &service{def: d, stop: make(chan struct{}), done: make(chan struct{}), restart: make(chan struct{}, 1)}
	svc.st = Status{Name: d.Name, State: StateWaiting, Required: d.Required, Since: time.Now()}
	svc.sink = &logs.Sink{Component: d.Name, Ring: logs.NewRing(1000)}
	if s.cfg.LogDir != "" {
		f, err := logs.OpenRotating(filepath.Join(s.cfg.LogDir, d.Name+".log"), logs.MaxFileBytes, logs.KeepFiles)
		if err != nil {
			return nil, err
		}
		svc.sink.File, svc.file = f, f
	}
	return svc, nil
}

// Start launches containerd, clears what a previous boot left in its
// namespace and starts the services. It returns once containerd answers;
// services come up in the background.
func (s *Supervisor) Start() error {
	d, err := s.launchContainerd()
	if err != nil {
		return err
	}
	if err := s.removeStale(d.client); err != nil {
		s.cfg.Log.WithError(err).Warn("could not remove what the previous boot left in containerd")
	}
	for _, ns := range s.cfg.ClearNamespaces {
		if n, err := s.clearNamespace(d.client, ns); err != nil {
			s.cfg.Log.WithError(err).WithField("namespace", ns).Warn("could not remove every container left in a namespace")
		} else if n > 0 {
			s.cfg.Log.WithFields(map[string]any{"namespace": ns, "containers": n}).Info("removed the containers left in a namespace")
		}
	}
	go s.superviseContainerd(d)
	for _, svc := range s.order {
		if svc.status().State == StateDisabled {
			close(svc.done)
			continue
		}
		go s.run(svc)
	}
	return nil
}

// Status returns every service's state, in start order.
func (s *Supervisor) Status() []Status {
	out := make([]Status, 0, len(s.order))
	for _, svc := range s.order {
		st := svc.status()
		st.Runtime = s.RuntimeName()
		out = append(out, st)
	}
	return out
}

// Health is whether containerd and every required service that is not
// switched off are ready; when not, the reason names the first that is
// not and why.
func (s *Supervisor) Health() (bool, string) {
	for _, svc := range append([]*service{s.ctrd}, s.order...) {
		st := svc.status()
		if !st.Required || st.State == StateDisabled || st.Ready {
			continue
		}
		state := st.State
		if state == StateFailed {
			state = "failing" // it is still retried
		}
		reason := fmt.Sprintf("%s is %s", st.Name, state)
		if st.Reason != "" {
			reason += ": " + st.Reason
		}
		return false, reason
	}
	return true, ""
}

// Await blocks until the status of the service name satisfies cond
// (asked again on every change of any state) and returns it. It fails
// with errdefs not found for no such service, unavailable when the
// supervisor stops first, and ctx's error when ctx ends first.
func (s *Supervisor) Await(ctx context.Context, name string, cond func(Status) bool) (Status, error) {
	svc := s.find(name)
	if svc == nil {
		return Status{}, fmt.Errorf("%w: no service named %s", errdefs.ErrNotFound, name)
	}
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		st := svc.status()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ch:
		case <-s.stopAll:
			return st, fmt.Errorf("%w: the services are stopping", errdefs.ErrUnavailable)
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// ContainerdStatus is containerd's state, pid, restarts and last exit.
func (s *Supervisor) ContainerdStatus() Status { return s.ctrd.status() }

// Logs returns the ring buffer of a service ("containerd" included).
func (s *Supervisor) Logs(name string) (*logs.Ring, error) {
	if svc := s.find(name); svc != nil {
		return svc.sink.Ring, nil
	}
	return nil, fmt.Errorf("%w: no service named %s", errdefs.ErrNotFound, name)
}

func (s *Supervisor) find(name string) *service {
	if name == s.ctrd.def.Name {
		return s.ctrd
	}
	for _, svc := range s.order {
		if svc.def.Name == name {
			return svc
		}
	}
	return nil
}

// Restart stops a service gracefully and starts it again at once, without
// counting it as a failure; a service waiting out its backoff starts now.
func (s *Supervisor) Restart(name string) error {
	svc := s.find(name)
	if svc == nil || svc == s.ctrd {
		return fmt.Errorf("%w: no service named %s", errdefs.ErrNotFound, name)
	}
	if st := svc.status(); st.State == StateDisabled {
		return fmt.Errorf("%w: service %s is disabled: %s", errdefs.ErrFailedPrecondition, name, st.Reason)
	}
	select {
	case svc.restart <- struct{}{}:
	default: // one pending request is enough
	}
	return nil
}

// Switch turns the services of a setting ("kubernetes") on or off: those
// switched on start as usual (after what they depend on), those switched
// off are stopped and shown disabled. The others are not touched.
func (s *Supervisor) Switch(setting string, on bool) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	if s.cfg.Settings == nil {
		s.cfg.Settings = map[string]bool{}
	}
	s.cfg.Settings[setting] = on
	s.mu.Unlock()
	for _, svc := range s.order {
		if svc.def.Setting != setting {
			continue
		}
		disabled := svc.status().State == StateDisabled
		switch {
		case on && disabled:
			svc.stop, svc.done = make(chan struct{}), make(chan struct{})
			s.update(svc, func(st *Status) { st.State, st.Reason = StateWaiting, "" })
			go s.run(svc)
			s.cfg.Log.WithField("service", svc.def.Name).Info("switched on")
		case !on && !disabled:
			close(svc.stop)
			<-svc.done
			s.update(svc, func(st *Status) {
				st.State, st.Ready, st.PID, st.Reason = StateDisabled, false, 0, fmt.Sprintf("setting %q is off", setting)
			})
			s.cfg.Log.WithField("service", svc.def.Name).Info("switched off")
		}
	}
}

// Rest suspends every liveness check (the engine is frozen on purpose:
// nothing answers, nothing is wrong) or resumes them.
func (s *Supervisor) Rest(on bool) { s.resting.Store(on) }

// Stop stops the services in reverse start order, then containerd.
func (s *Supervisor) Stop() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	close(s.stopAll)
	d := s.cur
	s.mu.Unlock()
	for i := len(s.order) - 1; i >= 0; i-- {
		svc := s.order[i]
		if svc.status().State == StateDisabled {
			continue // never started, or switched off: stopped already
		}
		close(svc.stop)
		<-svc.done
	}
	if d != nil && d.pid > 0 {
		s.update(s.ctrd, func(st *Status) { st.State, st.Ready = StateStopping, false })
		syscall.Kill(d.pid, syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			s.cfg.Log.Warn("containerd ignored SIGTERM; killing it")
			syscall.Kill(d.pid, syscall.SIGKILL)
			<-d.exited
		}
	}
	<-s.monitor
	// Only containerd's own cgroup goes: the parent stays while PID 1
	// runs, as what the engine's cgroups were charged (page cache of a
	// cgroup just removed too) is reclaimed through it after a stop.
	if h := s.cfg.Cgroups; h != nil {
		h.Remove(s.cfg.CgroupParent + "/containerd")
	}
	for _, svc := range append([]*service{s.ctrd}, s.order...) {
		if svc.file != nil {
			svc.file.Close()
		}
	}
	s.cfg.Log.Info("containerd stopped")
}

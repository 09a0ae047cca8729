package services

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	capability "github.com/containerd/containerd/pkg/cap"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// running is one started task of a service.
type running struct {
	container containerd.Container
	task      containerd.Task
	exit      <-chan containerd.ExitStatus
	pid       int
	outputs   []io.Closer

	mu    sync.Mutex
	cause string // why ddinit killed it, if it did
}

func (r *running) close() {
	for _, o := range r.outputs {
		o.Close()
	}
}

// kill ends the task with SIGKILL, remembering why for its exit record.
func (r *running) kill(s *Supervisor, cause string) {
	r.mu.Lock()
	r.cause = cause
	r.mu.Unlock()
	if err := r.task.Kill(s.ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		s.cfg.Log.WithError(err).Warn("SIGKILL failed")
	}
}

func (r *running) killCause() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cause
}

// finish deletes the exited task (draining its output) and its container.
func (r *running) finish(s *Supervisor) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	r.task.Delete(ctx)
	r.container.Delete(ctx)
	r.close()
}

func (s *Supervisor) startTask(d *daemon, svc *service) (*running, error) {
	name := svc.def.Name
	if err := s.removeContainer(d.client, name); err != nil {
		return nil, fmt.Errorf("remove the previous %s container: %w", name, err)
	}
	spec := *svc.def.Spec
	if spec.Process.Capabilities == nil {
		// No capabilities named: the service runs with ddinit's own, which
		// is what host-level daemons like dockerd need (and the only set
		// that can never ask for more than the kernel or WSL grants).
		caps, err := capability.Current()
		if err != nil {
			return nil, fmt.Errorf("read ddinit's capabilities: %w", err)
		}
		p := *spec.Process
		p.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
		spec.Process = &p
	}
	spec.Linux = withOwnMountNamespace(spec.Linux, name)
	if spec.Root.Path == "/" && s.cfg.HostRoot != "" {
		r := *spec.Root
		r.Path = s.cfg.HostRoot
		spec.Root = &r
	}
	container, err := d.client.NewContainer(s.ctx, name, containerd.WithSpec(&spec), containerd.WithRuntime("io.containerd.runc.v2", nil))
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	stdout, stderr := svc.sink.Writer("stdout"), svc.sink.Writer("stderr")
	r := &running{container: container, outputs: []io.Closer{stdout, stderr}}
	fail := func(err error) (*running, error) {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		if r.task != nil {
			r.task.Delete(ctx, containerd.WithProcessKill)
		}
		container.Delete(ctx)
		r.close()
		return nil, err
	}
	fifos := filepath.Join(s.cfg.RunDir, "fifo")
	task, err := container.NewTask(s.ctx, cio.NewCreator(cio.WithStreams(nil, stdout, stderr), cio.WithFIFODir(fifos)))
	if err != nil {
		return fail(fmt.Errorf("create task: %w", err))
	}
	r.task = task
	if r.exit, err = task.Wait(s.ctx); err != nil {
		return fail(fmt.Errorf("wait for task: %w", err))
	}
	if err := task.Start(s.ctx); err != nil {
		return fail(fmt.Errorf("start %s: %w", strings.Join(spec.Process.Args, " "), err))
	}
	r.pid = int(task.Pid())
	return r, nil
}

// withOwnMountNamespace gives a service its own mount namespace and a
// cgroup under /ddinit. Without a mount namespace runc would bind the
// service's root onto itself in ddinit's namespace, stacking a copy of "/"
// on every start. The root stays rshared so what the service mounts
// (dockerd's layers and network namespaces) is seen by containerd too.
func withOwnMountNamespace(l *specs.Linux, name string) *specs.Linux {
	out := specs.Linux{}
	if l != nil {
		out = *l
	}
	has := false
	for _, ns := range out.Namespaces {
		if ns.Type == specs.MountNamespace {
			has = true
		}
	}
	if !has {
		out.Namespaces = append(append([]specs.LinuxNamespace(nil), out.Namespaces...), specs.LinuxNamespace{Type: specs.MountNamespace})
	}
	if out.RootfsPropagation == "" {
		out.RootfsPropagation = "rshared"
	}
	if out.CgroupsPath == "" {
		out.CgroupsPath = "/ddinit/" + name
	}
	return &out
}

// stopTask ends a running service: SIGTERM, its stop timeout, SIGKILL.
func (s *Supervisor) stopTask(svc *service, r *running, log *logrus.Entry) {
	s.update(svc, func(st *Status) { st.State, st.Ready = StateStopping, false })
	start := time.Now()
	if err := r.task.Kill(s.ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		log.WithError(err).Warn("SIGTERM failed")
	}
	select {
	case <-r.exit:
	case <-time.After(svc.def.StopTimeout):
		log.WithField("timeout", svc.def.StopTimeout.String()).Warn("service ignored SIGTERM; killing it")
		r.task.Kill(s.ctx, syscall.SIGKILL)
		select {
		case <-r.exit:
		case <-time.After(10 * time.Second):
			log.Error("service survived SIGKILL for 10s")
		}
	}
	r.finish(s)
	s.update(svc, func(st *Status) { st.PID = 0 })
	log.WithField("ms", time.Since(start).Milliseconds()).Info("service stopped")
}

package services

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	capability "github.com/containerd/containerd/pkg/cap"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/timeline"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
)

// running is a service's containerd task.
type running struct {
	ctx       context.Context
	client    *containerd.Client
	log       *logrus.Entry
	container containerd.Container
	task      containerd.Task
	exit      <-chan containerd.ExitStatus
	pid       int
	outputs   []io.Closer
}

func (r *running) PID() int                             { return r.pid }
func (r *running) Exited() <-chan containerd.ExitStatus { return r.exit }

func (r *running) Signal(sig syscall.Signal) error {
	if err := r.task.Kill(r.ctx, sig); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("signal %s: %w", unix.SignalName(sig), err)
	}
	return nil
}

func (r *running) Abandon() {
	for _, o := range r.outputs {
		o.Close()
	}
}

// Finish deletes the ended task; the container stays for the next start
// (containerFor). The output copies end first, as containerd's client
// ends them, and the FIFOs go once the task is deleted.
func (r *running) Finish() {
	i := r.task.IO()
	if i != nil {
		i.Cancel()
		i.Wait()
	}
	if err := deleteTask(r.ctx, r.client, r.container.ID()); err != nil {
		// The next start deletes it again (startContainerdTask).
		r.log.WithError(err).Warn("the ended task was not deleted")
	}
	if i != nil {
		i.Close()
	}
	r.Abandon()
}

// deleteTask deletes container id's task through containerd's task
// service, trying again while containerd fails otherwise than with
// NotFound. A delete cut short (its deadline passed on a loaded machine,
// the caller went away) can end after the shim forgot the task but
// before containerd dropped its record of the shim: containerd then
// reports the task missing to Get (the client's Task.Delete gives up on
// that) yet present to Create ("already exists"), and keeps the record
// for a caller to delete again — which this does.
func deleteTask(ctx context.Context, client *containerd.Client, id string) error {
	var err error
	for range 3 {
		try, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err = client.TaskService().Delete(try, &tasks.DeleteTaskRequest{ContainerID: id})
		cancel()
		if err = errgrpc.ToNative(err); err == nil || errdefs.IsNotFound(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	return nil
}

// startContainerdTask creates svc's container and starts its task on
// containerd d.
func (s *Supervisor) startContainerdTask(d *daemon, svc *service) (task, error) {
	name := svc.def.Name
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
	if s.cfg.Env != nil {
		if extra := s.cfg.Env(name); len(extra) > 0 {
			p := *spec.Process
			p.Env = append(slices.Clip(p.Env), extra...)
			spec.Process = &p
		}
	}
	spec.Linux = withOwnMountNamespace(spec.Linux, name)
	if spec.Root.Path == "/" && s.cfg.HostRoot != "" {
		r := *spec.Root
		r.Path = s.cfg.HostRoot
		spec.Root = &r
		if s.cfg.RuntimeBinary != "" {
			binds, err := sharedBinds("/proc/self/mountinfo", s.cfg.HostRoot)
			if err != nil {
				return nil, err
			}
			spec.Mounts = append(slices.Clip(spec.Mounts), binds...)
		}
	}
	container, kept, err := s.containerFor(d.client, name, &spec)
	if err != nil {
		return nil, err
	}
	// One event either way, for the timelines side by side; the log
	// says which.
	s.mark(name + ": container ready")
	s.cfg.Log.WithFields(logrus.Fields{"service": name, "kept": kept}).Debug("container ready")
	stdout, stderr := svc.sink.Writer("stdout"), svc.sink.Writer("stderr")
	if m := s.cfg.Milestones[name]; len(m) > 0 && s.cfg.Mark != nil {
		stderr = timeline.WatchLines(stderr, m, s.cfg.Mark)
	}
	r := &running{ctx: s.ctx, client: d.client, log: s.cfg.Log.WithField("service", name), container: container, outputs: []io.Closer{stdout, stderr}}
	fail := func(err error) (task, error) {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		if r.task != nil {
			r.task.Delete(ctx, containerd.WithProcessKill)
		}
		// A start that failed with it is no proof the container is
		// good: the next start makes a new one.
		container.Delete(ctx)
		r.Abandon()
		return nil, err
	}
	fifos := filepath.Join(s.cfg.RunDir, "fifo")
	newTask := func() (containerd.Task, error) {
		return container.NewTask(s.ctx, cio.NewCreator(cio.WithStreams(nil, stdout, stderr), cio.WithFIFODir(fifos)))
	}
	task, err := newTask()
	if errdefs.IsAlreadyExists(err) {
		// containerFor saw no task, so this is the record a delete cut
		// short left (deleteTask): delete it again and start over once.
		r.log.WithError(err).Warn("containerd kept the record of an ended task; deleting it again")
		if derr := deleteTask(s.ctx, d.client, name); derr != nil {
			err = fmt.Errorf("%w (%v)", err, derr)
		} else {
			task, err = newTask()
		}
	}
	if err != nil {
		return fail(fmt.Errorf("create task: %w", err))
	}
	r.task = task
	s.mark(name + ": task created (shim started, runtime create)")
	if r.exit, err = task.Wait(s.ctx); err != nil {
		return fail(fmt.Errorf("wait for task: %w", err))
	}
	if err := task.Start(s.ctx); err != nil {
		return fail(fmt.Errorf("start %s: %w", strings.Join(spec.Process.Args, " "), err))
	}
	r.pid = int(task.Pid())
	s.mark(name + ": task started")
	return r, nil
}

// specDigestLabel is the container label that holds the digest of the
// spec and runtime a service's container was made with.
const specDigestLabel = "io.ddinit.spec-digest"

// containerFor returns the container for a start of service name: the one
// an earlier start left, when it was made from the same spec and has no
// task, or else a new one. A kept container saves a delete and a create
// (two of containerd's synced metadata writes) on every boot and wake; a
// changed spec (a new version pack, new proxy settings) gets a new one.
func (s *Supervisor) containerFor(client *containerd.Client, name string, spec *specs.Spec) (c containerd.Container, kept bool, err error) {
	// The runtime binary is in the digest: a change of runtime makes a new
	// container, whose options name it.
	b, err := json.Marshal(struct {
		Runtime, Binary string
		Spec            *specs.Spec
	}{serviceRuntime, s.cfg.RuntimeBinary, spec})
	if err != nil {
		return nil, false, fmt.Errorf("container %s: %w", name, err)
	}
	digest := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	switch old, err := client.LoadContainer(s.ctx, name); {
	case errdefs.IsNotFound(err):
	case err != nil:
		return nil, false, fmt.Errorf("container %s: %w", name, err)
	default:
		info, err := old.Info(s.ctx, containerd.WithoutRefreshedMetadata)
		if _, terr := old.Task(s.ctx, nil); err == nil && info.Labels[specDigestLabel] == digest && errdefs.IsNotFound(terr) {
			return old, true, nil
		}
		if err := s.removeContainer(old); err != nil {
			return nil, false, fmt.Errorf("remove the previous %s container: %w", name, err)
		}
	}
	var opts any
	if s.cfg.RuntimeBinary != "" {
		opts = &runcoptions.Options{BinaryName: s.cfg.RuntimeBinary}
	}
	c, err = client.NewContainer(s.ctx, name, containerd.WithSpec(spec), withMountsBlock, containerd.WithRuntime(serviceRuntime, opts),
		containerd.WithContainerLabels(map[string]string{specDigestLabel: digest}))
	if err != nil {
		return nil, false, fmt.Errorf("create container: %w", err)
	}
	return c, false, nil
}

// sharedBinds are the binds a service on ddinit's own root needs under
// crun: each outermost shared mount of PID 1's namespace (mountinfo:
// the data store's binds, /run, /tmp…), bound again at its own place
// with rshared. runc's rshared root propagation keeps what the service
// mounts there (dockerd's layers, its containers' network namespaces,
// kubelet's volumes) visible to containerd and its shims in PID 1's
// namespace; crun 1.8 makes the root's bind private first, so only an
// explicit rshared bind of each mount propagates. /proc, /sys, /dev and
// the service root itself are left as the root's bind brings them.
func sharedBinds(mountinfo, serviceRoot string) ([]specs.Mount, error) {
	table, err := mounts.ReadMountinfo(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("the namespace's mounts: %w", err)
	}
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/") }
	var points []string
	for _, m := range table {
		shared := slices.ContainsFunc(m.Optional, func(o string) bool { return strings.HasPrefix(o, "shared:") })
		if !shared || m.Point == "/" || under(m.Point, "/proc") || under(m.Point, "/sys") || under(m.Point, "/dev") || under(m.Point, serviceRoot) {
			continue
		}
		points = append(points, m.Point)
	}
	slices.Sort(points)
	var out []specs.Mount
	for _, p := range slices.Compact(points) {
		if len(out) > 0 && under(p, out[len(out)-1].Destination) {
			continue // bound with the mount it is under
		}
		out = append(out, specs.Mount{Destination: p, Source: p, Type: "bind", Options: []string{"rbind", "rshared"}})
	}
	return out, nil
}

// withMountsBlock keeps a "mounts" block in the spec containerd stores
// when the spec has no mount (encoding/json leaves the empty list out):
// crun refuses a spec without one ("no 'mounts' block specified"), runc
// takes either.
func withMountsBlock(_ context.Context, _ *containerd.Client, c *containers.Container) error {
	if c.Spec == nil {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(c.Spec.GetValue(), &fields); err != nil {
		return fmt.Errorf("the spec as stored: %w", err)
	}
	if _, ok := fields["mounts"]; ok {
		return nil
	}
	fields["mounts"] = json.RawMessage("[]")
	b, err := json.Marshal(fields)
	if err != nil {
		return fmt.Errorf("the spec as stored: %w", err)
	}
	c.Spec = &anypb.Any{TypeUrl: c.Spec.GetTypeUrl(), Value: b}
	return nil
}

// serviceRuntime is the containerd runtime every service runs under.
const serviceRuntime = "io.containerd.runc.v2"

// RuntimeName is the OCI runtime the services run under, as /status
// names it: "runc", or RuntimeBinary's name.
func (s *Supervisor) RuntimeName() string {
	if s.cfg.RuntimeBinary == "" {
		return "runc"
	}
	return filepath.Base(s.cfg.RuntimeBinary)
}

// DefaultCgroupParent is the engine's cgroup: containerd's and every
// service's are below it, and nothing else.
const DefaultCgroupParent = "/ddinit"

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
		out.CgroupsPath = DefaultCgroupParent + "/" + name
	}
	return &out
}

// stopTask ends a running service: SIGTERM, its stop timeout, SIGKILL.
func (s *Supervisor) stopTask(svc *service, t task, log *logrus.Entry) {
	s.update(svc, func(st *Status) { st.State, st.Ready = StateStopping, false })
	start := time.Now()
	if err := t.Signal(syscall.SIGTERM); err != nil {
		log.WithError(err).Warn("SIGTERM failed")
	}
	select {
	case <-t.Exited():
	case <-time.After(svc.def.StopTimeout):
		log.WithField("timeout", svc.def.StopTimeout.String()).Warn("service ignored SIGTERM; killing it")
		if err := t.Signal(syscall.SIGKILL); err != nil {
			log.WithError(err).Warn("SIGKILL failed")
		}
		select {
		case <-t.Exited():
		case <-time.After(10 * time.Second):
			log.Error("service survived SIGKILL for 10s")
		}
	}
	t.Finish()
	s.update(svc, func(st *Status) { st.PID = 0 })
	log.WithField("ms", time.Since(start).Milliseconds()).Info("service stopped")
}

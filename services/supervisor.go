package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	capability "github.com/containerd/containerd/pkg/cap"
	"github.com/ddinit/ddinit/logs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Spawner starts a process and reports its exit status once. PID 1 passes
// one that cooperates with its reaper.
type Spawner interface {
	Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error)
}

// DirectSpawner waits with cmd.Wait: right wherever the caller is not the
// reaper of last resort.
type DirectSpawner struct{}

// Start implements Spawner.
func (DirectSpawner) Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			ch <- unix.WaitStatus(ws)
		} else {
			ch <- 0
		}
	}()
	return ch, nil
}

// Backoff is the restart delay policy: Initial, doubling per consecutive
// failure up to Max; a run that lasted ResetAfter starts over.
type Backoff struct {
	Initial    time.Duration `json:"initial"`
	Max        time.Duration `json:"max"`
	ResetAfter time.Duration `json:"resetAfter"`
}

// DefaultBackoff is 100 ms doubling to 30 s, reset after a stable minute.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: time.Minute}

// Delay is the wait before restart number failures (1-based).
func (b Backoff) Delay(failures int) time.Duration {
	d := b.Initial
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Config says how to run containerd and where things live.
type Config struct {
	Namespace        string // containerd namespace of the services
	ContainerdBinary string
	RunDir           string // containerd.toml and task FIFOs go here
	ContainerdRoot   string
	ContainerdState  string
	Address          string // containerd's socket
	LogDir           string
	Backoff          Backoff
	// CrashLoop is how many consecutive failed runs mark a service failed.
	CrashLoop int
	// HostRoot is where ddinit's own root is bound for services whose spec
	// says root.path "/": runc cannot use the current root as a new root.
	HostRoot string
	// Settings switch optional services on ("kubernetes": true).
	Settings map[string]bool
	Spawner  Spawner
	Log      *logrus.Entry
}

// Service states.
const (
	StateWaiting    = "waiting"    // for containerd or a dependency
	StateStarting   = "starting"   // task started, not yet ready
	StateRunning    = "running"    // ready
	StateRestarting = "restarting" // exited; waiting out the backoff
	StateFailed     = "failed"     // crash-looping; still retried
	StateStopping   = "stopping"
	StateStopped    = "stopped"
	StateDisabled   = "disabled" // its setting is off
)

// ExitInfo is how a run of a service ended.
type ExitInfo struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"` // the start itself failed
	Time   time.Time `json:"time"`
	Ran    string    `json:"ran"`
	Output []string  `json:"output,omitempty"` // its last lines
}

// Status is a service's state as the control API shows it.
type Status struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Ready     bool      `json:"ready"`
	Required  bool      `json:"required"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
	NextStart time.Time `json:"nextStart,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	LastExit  *ExitInfo `json:"lastExit,omitempty"`
}

type service struct {
	def     Definition
	sink    *logs.Sink
	file    *logs.RotatingFile
	stop    chan struct{}
	done    chan struct{}
	restart chan struct{} // a restart asked for (control API)

	mu sync.Mutex
	st Status
}

// ctrd is one generation of the containerd daemon.
type ctrd struct {
	gen    int
	pid    int
	client *containerd.Client
	down   chan struct{} // closed when this generation dies
	exited chan struct{} // closed once its process is reaped
}

// Supervisor runs containerd and the services.
type Supervisor struct {
	cfg   Config
	order []*service
	ctx   context.Context // carries the containerd namespace; never cancelled

	ctrdSink *logs.Sink
	ctrdFile *logs.RotatingFile

	mu       sync.Mutex
	cur      *ctrd
	changed  chan struct{} // closed and replaced on every state change
	stopping bool
	ctrdRuns int
	stopAll  chan struct{}
	monitor  chan struct{} // closed when the containerd monitor returns
}

// New prepares a supervisor for defs.
func New(cfg Config, defs []Definition) (*Supervisor, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "services.ddinit"
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.CrashLoop <= 0 {
		cfg.CrashLoop = 5
	}
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
	if s.ctrdSink, s.ctrdFile, err = s.openSink("containerd"); err != nil {
		return nil, err
	}
	for _, d := range ordered {
		svc := &service{def: d, stop: make(chan struct{}), done: make(chan struct{}), restart: make(chan struct{}, 1)}
		svc.st = Status{Name: d.Name, State: StateWaiting, Required: d.Required, Since: time.Now()}
		if d.Setting != "" && !cfg.Settings[d.Setting] {
			svc.st.State, svc.st.Reason = StateDisabled, fmt.Sprintf("setting %q is off", d.Setting)
		}
		if svc.sink, svc.file, err = s.openSink(d.Name); err != nil {
			return nil, err
		}
		s.order = append(s.order, svc)
	}
	return s, nil
}

func (s *Supervisor) openSink(name string) (*logs.Sink, *logs.RotatingFile, error) {
	sink := &logs.Sink{Component: name, Ring: logs.NewRing(1000)}
	if s.cfg.LogDir == "" {
		return sink, nil, nil
	}
	f, err := logs.OpenRotating(filepath.Join(s.cfg.LogDir, name+".log"), logs.MaxFileBytes, logs.KeepFiles)
	if err != nil {
		return nil, nil, err
	}
	sink.File = f
	return sink, f, nil
}

// Start launches containerd, clears what a previous boot left in its
// namespace and starts the services. It returns once containerd answers;
// services come up in the background.
func (s *Supervisor) Start() error {
	c, exited, err := s.launchContainerd()
	if err != nil {
		return err
	}
	s.setContainerd(c)
	go s.watchContainerd(c, exited)
	if err := s.removeStale(c.client); err != nil {
		s.cfg.Log.WithError(err).Warn("could not remove what the previous boot left in containerd")
	}
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
		out = append(out, svc.status())
	}
	return out
}

// Logs returns the ring buffer of a service ("containerd" included).
func (s *Supervisor) Logs(name string) *logs.Ring {
	if name == "containerd" {
		return s.ctrdSink.Ring
	}
	for _, svc := range s.order {
		if svc.def.Name == name {
			return svc.sink.Ring
		}
	}
	return nil
}

// Definitions returns the services, in start order.
func (s *Supervisor) Definitions() []Definition {
	out := make([]Definition, 0, len(s.order))
	for _, svc := range s.order {
		out = append(out, svc.def)
	}
	return out
}

// ErrUnknownService is returned for a name no definition has.
var ErrUnknownService = errors.New("no such service")

// Restart stops a service gracefully and starts it again at once, without
// counting it as a failure; a service waiting out its backoff starts now.
func (s *Supervisor) Restart(name string) error {
	for _, svc := range s.order {
		if svc.def.Name != name {
			continue
		}
		if st := svc.status(); st.State == StateDisabled {
			return fmt.Errorf("service %s is disabled: %s", name, st.Reason)
		}
		select {
		case svc.restart <- struct{}{}:
		default: // one pending request is enough
		}
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnknownService, name)
}

// ContainerdRestarts is how often containerd was restarted after dying.
func (s *Supervisor) ContainerdRestarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctrdRuns - 1
}

// ContainerdPID is the running containerd's pid, 0 while it is down.
func (s *Supervisor) ContainerdPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.pid
}

func (svc *service) status() Status {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	st := svc.st
	return st
}

// update changes a service's status and wakes whoever waits on states,
// but only when something changed: waiters re-check on every wake.
func (s *Supervisor) update(svc *service, f func(st *Status)) {
	svc.mu.Lock()
	prev := svc.st
	f(&svc.st)
	if svc.st.State != prev.State {
		svc.st.Since = time.Now()
	}
	changed := svc.st != prev
	svc.mu.Unlock()
	if changed {
		s.notify()
	}
}

func (s *Supervisor) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Supervisor) setContainerd(c *ctrd) {
	s.mu.Lock()
	s.cur = c
	s.mu.Unlock()
	s.notify()
}

// waitFor blocks until cond holds (checked on every state change) or stop
// is closed; it returns false on stop.
func (s *Supervisor) waitFor(stop <-chan struct{}, cond func() bool) bool {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

// ---- containerd ----------------------------------------------------------

func (s *Supervisor) writeContainerdConfig() (string, error) {
	for _, d := range []string{s.cfg.RunDir, s.cfg.ContainerdRoot, s.cfg.ContainerdState, filepath.Dir(s.cfg.Address)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", fmt.Errorf("containerd: %w", err)
		}
	}
	conf := ContainerdConfig(s.cfg.ContainerdRoot, s.cfg.ContainerdState, s.cfg.Address)
	path := filepath.Join(s.cfg.RunDir, "containerd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("containerd config: %w", err)
	}
	return path, nil
}

// ContainerdConfig is the config.toml ddinit runs containerd with. CRI is
// off: nothing here speaks it, and it costs boot time.
func ContainerdConfig(root, state, address string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`, root, state, address, address+".ttrpc")
}

// launchContainerd starts containerd and waits until it answers.
func (s *Supervisor) launchContainerd() (*ctrd, <-chan unix.WaitStatus, error) {
	conf, err := s.writeContainerdConfig()
	if err != nil {
		return nil, nil, err
	}
	os.Remove(s.cfg.Address) // a socket left by a killed containerd
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(s.cfg.ContainerdBinary, "--config", conf)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	start := time.Now()
	exitCh, err := s.cfg.Spawner.Start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("start containerd (%s): %w", s.cfg.ContainerdBinary, err)
	}
	out := s.ctrdSink.Writer("stderr")
	go func() {
		io.Copy(out, r)
		out.Close()
		r.Close()
	}()
	s.mu.Lock()
	s.ctrdRuns++
	gen := s.ctrdRuns
	s.mu.Unlock()
	c := &ctrd{gen: gen, pid: cmd.Process.Pid, down: make(chan struct{}), exited: make(chan struct{})}
	forwarded := make(chan unix.WaitStatus, 1)
	deadline := time.After(30 * time.Second)
	for delay := time.Millisecond; ; delay = min(delay*2, 20*time.Millisecond) {
		select {
		case ws := <-exitCh:
			return nil, nil, fmt.Errorf("containerd exited during start (%s); its last output: %s", describeWait(ws), lastLines(s.ctrdSink.Ring, 3))
		case <-deadline:
			syscall.Kill(c.pid, syscall.SIGKILL)
			<-exitCh
			return nil, nil, fmt.Errorf("containerd did not answer on %s within 30s; its last output: %s", s.cfg.Address, lastLines(s.ctrdSink.Ring, 3))
		case <-time.After(delay):
		}
		conn, err := net.Dial("unix", s.cfg.Address)
		if err != nil {
			continue
		}
		conn.Close()
		client, err := containerd.New(s.cfg.Address, containerd.WithDefaultNamespace(s.cfg.Namespace), containerd.WithTimeout(5*time.Second))
		if err != nil {
			continue
		}
		if _, err := client.Version(s.ctx); err != nil {
			client.Close()
			continue
		}
		c.client = client
		break
	}
	go func() { forwarded <- <-exitCh }()
	s.cfg.Log.WithFields(logrus.Fields{"pid": c.pid, "generation": gen, "ms": time.Since(start).Milliseconds()}).Info("containerd is up")
	return c, forwarded, nil
}

// watchContainerd restarts containerd, with backoff, whenever it dies
// outside a shutdown; the services notice and restart on the new one.
func (s *Supervisor) watchContainerd(c *ctrd, exited <-chan unix.WaitStatus) {
	defer close(s.monitor)
	failures := 0
	for {
		ws := <-exited
		close(c.exited)
		s.mu.Lock()
		stopping := s.stopping
		if s.cur == c {
			s.cur = nil
		}
		s.mu.Unlock()
		close(c.down)
		c.client.Close()
		s.notify()
		if stopping {
			return
		}
		s.cfg.Log.WithField("status", describeWait(ws)).Error("containerd died; restarting it and then its services")
		for {
			failures++
			delay := s.cfg.Backoff.Delay(failures)
			select {
			case <-time.After(delay):
			case <-s.stopAll:
				return
			}
			next, nextExited, err := s.launchContainerd()
			if err != nil {
				s.cfg.Log.WithError(err).WithField("retryIn", s.cfg.Backoff.Delay(failures+1)).Error("containerd restart failed")
				continue
			}
			c, exited = next, nextExited
			break
		}
		s.setContainerd(c)
		if failures > 0 {
			failures = 0
		}
	}
}

// removeStale deletes every container and task in the services namespace:
// what a previous boot, or a previous containerd, left running.
func (s *Supervisor) removeStale(client *containerd.Client) error {
	containers, err := client.Containers(s.ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range containers {
		s.cfg.Log.WithField("container", c.ID()).Info("removing a service container left by an earlier run")
		errs = append(errs, s.removeContainer(client, c.ID()))
	}
	return errors.Join(errs...)
}

func (s *Supervisor) removeContainer(client *containerd.Client, id string) error {
	c, err := client.LoadContainer(s.ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if t, err := c.Task(s.ctx, nil); err == nil {
		if _, err := t.Delete(s.ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	}
	if err := c.Delete(s.ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// ---- services ----------------------------------------------------------

// run is one service's life: wait, start, watch, restart.
func (s *Supervisor) run(svc *service) {
	defer close(svc.done)
	log := s.cfg.Log.WithField("service", svc.def.Name)
	failures := 0
	for {
		var c *ctrd
		ok := s.waitFor(svc.stop, func() bool {
			s.mu.Lock()
			c = s.cur
			s.mu.Unlock()
			if c == nil {
				s.update(svc, func(st *Status) { st.State, st.Reason, st.Ready = StateWaiting, "containerd is not running", false })
				return false
			}
			if dep := s.unreadyDependency(svc); dep != "" {
				s.update(svc, func(st *Status) { st.State, st.Reason, st.Ready = StateWaiting, dep+" is not ready", false })
				return false
			}
			return true
		})
		if !ok {
			s.update(svc, func(st *Status) { st.State, st.Reason = StateStopped, "" })
			return
		}
		started := time.Now()
		r, err := s.startTask(c, svc)
		if err != nil {
			select {
			case <-svc.stop:
				s.update(svc, func(st *Status) { st.State = StateStopped })
				return
			case <-c.down:
				continue
			default:
			}
			failures++
			exit := &ExitInfo{Code: -1, Error: err.Error(), Time: time.Now(), Ran: "0s"}
			if !s.backoff(svc, log, failures, exit) {
				return
			}
			continue
		}
		s.update(svc, func(st *Status) {
			st.State, st.PID, st.Reason, st.NextStart = StateStarting, r.pid, "", time.Time{}
		})
		log.WithField("pid", r.pid).Info("service started")
		probeCtx, cancelProbe := context.WithCancel(context.Background())
		go s.probe(probeCtx, svc, log)
		select {
		case st := <-r.exit:
			cancelProbe()
			if st.Error() != nil {
				// The wait broke, not the service: containerd went away.
				select {
				case <-c.down:
				case <-svc.stop:
				}
				r.close()
				continue
			}
			ran := time.Since(started)
			r.finish(s)
			if ran >= s.cfg.Backoff.ResetAfter {
				failures = 0
			}
			failures++
			exit := &ExitInfo{Code: int(st.ExitCode()), Time: st.ExitTime(), Ran: ran.Round(time.Millisecond).String(), Output: tailText(svc.sink.Ring, 10)}
			if code := st.ExitCode(); code > 128 && code < 128+65 {
				exit.Signal = unix.SignalName(syscall.Signal(code - 128))
			}
			if !s.backoff(svc, log, failures, exit) {
				return
			}
		case <-c.down:
			cancelProbe()
			r.close()
		case <-svc.stop:
			cancelProbe()
			s.stopTask(svc, r, log)
			s.update(svc, func(st *Status) { st.State = StateStopped })
			return
		case <-svc.restart:
			cancelProbe()
			log.Info("restart requested")
			s.stopTask(svc, r, log)
			s.update(svc, func(st *Status) { st.Restarts++; st.State, st.Reason = StateWaiting, "restarting on request" })
			failures = 0
		}
	}
}

// backoff records an exit and waits before the next start; false means a
// stop came while waiting.
func (s *Supervisor) backoff(svc *service, log *logrus.Entry, failures int, exit *ExitInfo) bool {
	delay := s.cfg.Backoff.Delay(failures)
	state := StateRestarting
	if failures >= s.cfg.CrashLoop {
		state = StateFailed
	}
	var restarts int
	s.update(svc, func(st *Status) {
		st.Restarts++
		restarts = st.Restarts
		st.State, st.Ready, st.PID, st.LastExit = state, false, 0, exit
		st.NextStart = time.Now().Add(delay)
		st.Reason = fmt.Sprintf("exited (%s); restarting in %s", describeExit(exit), delay)
		if state == StateFailed {
			st.Reason = fmt.Sprintf("failing: %d runs in a row ended (last: %s); retrying in %s", failures, describeExit(exit), delay)
		}
	})
	fields := logrus.Fields{"exitCode": exit.Code, "ran": exit.Ran, "restarts": restarts, "restartIn": delay.String(), "backoffMs": delay.Milliseconds()}
	if exit.Error != "" {
		fields["error"] = exit.Error
	}
	if state == StateFailed {
		log.WithFields(fields).WithField("lastOutput", strings.Join(exit.Output, " | ")).Error("service is failing")
	} else {
		log.WithFields(fields).Warn("service exited; restarting")
	}
	select {
	case <-time.After(delay):
		return true
	case <-svc.restart:
		return true
	case <-svc.stop:
		s.update(svc, func(st *Status) { st.State, st.NextStart = StateStopped, time.Time{} })
		return false
	}
}

func describeExit(e *ExitInfo) string {
	switch {
	case e.Error != "":
		return "start failed: " + e.Error
	case e.Signal != "":
		return fmt.Sprintf("killed by %s", e.Signal)
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

func (s *Supervisor) unreadyDependency(svc *service) string {
	for _, dep := range svc.def.DependsOn {
		for _, other := range s.order {
			if other.def.Name == dep && !other.status().Ready {
				return dep
			}
		}
	}
	return ""
}

// probe polls the readiness probe until it passes once.
func (s *Supervisor) probe(ctx context.Context, svc *service, log *logrus.Entry) {
	start := time.Now()
	if svc.def.Ready != nil {
		for delay := 2 * time.Millisecond; ; delay = min(delay*2, 10*time.Millisecond) {
			if svc.def.Ready.Check(ctx) == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	s.update(svc, func(st *Status) { st.State, st.Ready = StateRunning, true })
	log.WithField("ms", time.Since(start).Milliseconds()).Info("service is ready")
}

// running is one started task.
type running struct {
	container containerd.Container
	task      containerd.Task
	exit      <-chan containerd.ExitStatus
	pid       int
	outputs   []io.Closer
}

func (r *running) close() {
	for _, o := range r.outputs {
		o.Close()
	}
}

// finish deletes the exited task (draining its output) and its container.
func (r *running) finish(s *Supervisor) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	r.task.Delete(ctx)
	r.container.Delete(ctx)
	r.close()
}

func (s *Supervisor) startTask(c *ctrd, svc *service) (*running, error) {
	name := svc.def.Name
	if err := s.removeContainer(c.client, name); err != nil {
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
	container, err := c.client.NewContainer(s.ctx, name, containerd.WithSpec(&spec), containerd.WithRuntime("io.containerd.runc.v2", nil))
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

// Stop stops the services in reverse start order, then containerd.
func (s *Supervisor) Stop() {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return
	}
	s.stopping = true
	close(s.stopAll)
	c := s.cur
	s.mu.Unlock()
	for i := len(s.order) - 1; i >= 0; i-- {
		svc := s.order[i]
		select {
		case <-svc.stop:
		default:
			close(svc.stop)
		}
		<-svc.done
	}
	if c != nil {
		syscall.Kill(c.pid, syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			s.cfg.Log.Warn("containerd ignored SIGTERM; killing it")
			syscall.Kill(c.pid, syscall.SIGKILL)
			<-c.exited
		}
	}
	<-s.monitor
	for _, svc := range s.order {
		if svc.file != nil {
			svc.file.Close()
		}
	}
	if s.ctrdFile != nil {
		s.ctrdFile.Close()
	}
	s.cfg.Log.Info("containerd stopped")
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}

func tailText(r *logs.Ring, n int) []string {
	var out []string
	for _, l := range r.Tail(n) {
		out = append(out, l.Text)
	}
	return out
}

func lastLines(r *logs.Ring, n int) string {
	t := tailText(r, n)
	if len(t) == 0 {
		return "(none)"
	}
	return strings.Join(t, " | ")
}

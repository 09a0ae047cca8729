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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ContainerdConfig is the config.toml ddinit runs containerd with, in
// the format version a containerd reads without migrating it at each
// start (ContainerdConfigVersion: 2 for 1.x, 3 for 2.0 to 2.3, 4 from 2.4;
// an older one makes 2.4 log "Configuration migrated" at every start).
// Off, because nothing here uses them and each costs every start time: CRI
// (and, from 2.0, its image and runtime plugins, the pod sandbox controller
// and NRI); the snapshotters but overlayfs and native (dockerd keeps its
// own layers; aufs alone runs modprobe at each start); the restart monitor
// (ddinit restarts what needs it); tracing. The v1 runtime stays:
// containerd 1.6's tasks service will not load without it. With cri,
// CRI's plugins are on and configured (Kubernetes).
func ContainerdConfig(root, state, address string, version int, cri *CRI) string {
	disabled := []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.snapshotter.v1.aufs",
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.internal.v1.restart",
	}
	if version >= 3 {
		disabled = []string{
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.grpc.v1.cri",
			"io.containerd.podsandbox.controller.v1.podsandbox",
			"io.containerd.nri.v1.nri",
			"io.containerd.snapshotter.v1.blockfile",
			"io.containerd.snapshotter.v1.erofs",
			"io.containerd.monitor.container.v1.restart",
			"io.containerd.tracing.processor.v1.otlp",
			"io.containerd.internal.v1.tracing",
		}
	} else {
		version = 2
	}
	extra := ""
	if cri != nil {
		disabled = slices.DeleteFunc(disabled, func(p string) bool { return slices.Contains(criPlugins(version), p) })
		extra = criSection(version, *cri)
	}
	var list strings.Builder
	for _, d := range disabled {
		fmt.Fprintf(&list, "  %s,\n", tomlString(d))
	}
	// Version 4 moved the listeners' addresses into their server
	// plugins: a top-level [grpc] there is ignored, and containerd
	// listens on its default socket.
	servers := fmt.Sprintf("[grpc]\n  address = %s\n\n[ttrpc]\n  address = %s\n", tomlString(address), tomlString(address+".ttrpc"))
	if version >= 4 {
		servers = fmt.Sprintf("[plugins.'io.containerd.server.v1.grpc']\n  address = %s\n\n[plugins.'io.containerd.server.v1.ttrpc']\n  address = %s\n", tomlString(address), tomlString(address+".ttrpc"))
	}
	return fmt.Sprintf(`version = %d
root = %s
state = %s
disabled_plugins = [
%s]

%s%s`, version, tomlString(root), tomlString(state), list.String(), servers, extra)
}

// ContainerdConfigVersion is the config format version the containerd a
// version string names reads as its own ("2.4.2", "v2.4.2", Debian's
// "1.6.20~ds1-1+b1"): 2 for 1.x and for a string that names no version
// (a format every release reads), 3 for 2.0 to 2.3, 4 from 2.4.
func ContainerdConfigVersion(version string) int {
	v := strings.TrimPrefix(version, "v")
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:] // a Debian epoch
	}
	majorText, rest, _ := strings.Cut(v, ".")
	major, err := strconv.Atoi(majorText)
	if err != nil || major < 2 {
		return 2
	}
	minorText, _, _ := strings.Cut(rest, ".")
	minor, err := strconv.Atoi(minorText)
	if major == 2 && (err != nil || minor < 4) {
		return 3
	}
	return 4
}

func (s *Supervisor) writeContainerdConfig() (string, error) {
	for _, d := range []string{s.cfg.RunDir, s.cfg.ContainerdRoot, s.cfg.ContainerdState, filepath.Dir(s.cfg.Address)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", fmt.Errorf("containerd: %w", err)
		}
	}
	conf := ContainerdConfig(s.cfg.ContainerdRoot, s.cfg.ContainerdState, s.cfg.Address, s.cfg.ContainerdConfigVersion, s.cfg.CRI)
	path := filepath.Join(s.cfg.RunDir, "containerd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("containerd config: %w", err)
	}
	return path, nil
}

// launchContainerd starts containerd, waits until it answers and marks it
// running.
func (s *Supervisor) launchContainerd() (*daemon, error) {
	conf, err := s.writeContainerdConfig()
	if err != nil {
		return nil, err
	}
	// A socket left by a killed containerd; none is the usual case.
	if err := os.Remove(s.cfg.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove containerd's old socket: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.cfg.ContainerdBinary, "--config", conf)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = []string{"PATH=" + DefaultPath}
	s.update(s.ctrd, func(st *Status) { st.State, st.Reason, st.NextStart = StateStarting, "", time.Time{} })
	start := time.Now()
	exitCh, err := s.cfg.Spawner.Start(cmd)
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start containerd (%s): %w", s.cfg.ContainerdBinary, err)
	}
	s.mark("containerd started")
	out := s.ctrd.sink.Writer("stderr")
	go func() {
		io.Copy(out, r)
		out.Close()
		r.Close()
	}()
	d := &daemon{pid: cmd.Process.Pid, started: start, down: make(chan struct{}), exited: make(chan struct{})}
	// Into the engine's cgroup, before it starts any shim (they inherit
	// it): the engine can then be frozen, and its memory reclaimed, apart
	// from ddinit and the distro.
	if h := s.cfg.Cgroups; h != nil {
		if err := h.Place(s.cfg.CgroupParent+"/containerd", d.pid); err != nil {
			s.cfg.Log.WithError(err).Warn("containerd stays in ddinit's cgroup: the engine cannot be paused apart")
		}
	}
	deadline := time.After(30 * time.Second)
	// Asked every millisecond for its first second (a refused connect is a
	// few microseconds; containerd answers within ~50 ms, and each
	// millisecond waited past that is the boot's), every 20 ms after.
	for delay := time.Millisecond; d.client == nil; {
		if time.Since(start) > time.Second {
			delay = 20 * time.Millisecond
		}
		select {
		case ws := <-exitCh:
			return nil, fmt.Errorf("containerd exited during start (%s); its last output: %s", describeWait(ws), lastLines(s.ctrd.sink.Ring, 3))
		case <-deadline:
			syscall.Kill(d.pid, syscall.SIGKILL)
			<-exitCh
			return nil, fmt.Errorf("containerd did not answer on %s within 30s; its last output: %s", s.cfg.Address, lastLines(s.ctrd.sink.Ring, 3))
		case <-time.After(delay):
		}
		d.client = s.dialContainerd()
	}
	s.mark("containerd answering")
	d.wait = exitCh
	s.mu.Lock()
	s.cur = d
	s.mu.Unlock()
	s.update(s.ctrd, func(st *Status) { st.State, st.Ready, st.PID, st.Reason = StateRunning, true, d.pid, "" })
	s.cfg.Log.WithFields(logrus.Fields{"pid": d.pid, "ms": time.Since(start).Milliseconds()}).Info("containerd is up")
	return d, nil
}

// dialContainerd returns a client once containerd answers Version.
func (s *Supervisor) dialContainerd() *containerd.Client {
	conn, err := net.Dial("unix", s.cfg.Address)
	if err != nil {
		return nil
	}
	conn.Close()
	client, err := containerd.New(s.cfg.Address, containerd.WithDefaultNamespace(s.cfg.Namespace), containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil
	}
	if _, err := client.Version(s.ctx); err != nil {
		client.Close()
		return nil
	}
	return client
}

// superviseContainerd watches each run of containerd, answering its
// liveness check, and when it dies outside a shutdown restarts it under
// the restart policy; the services notice and restart on the new one.
func (s *Supervisor) superviseContainerd(d *daemon) {
	defer close(s.monitor)
	log := s.cfg.Log.WithField("service", "containerd")
	failures := 0
	for {
		exit, ran := s.awaitContainerdExit(d, log)
		if exit == nil {
			return // a shutdown
		}
		for {
			var delay time.Duration
			var state string
			failures, delay, state = s.cfg.Restart.Next(failures, ran)
			s.update(s.ctrd, func(st *Status) { exitedWhile(st, exit, state, failures, delay) })
			fields := logrus.Fields{"status": describeExit(exit), "ran": exit.Ran, "restartIn": delay.String(), "backoffMs": delay.Milliseconds()}
			if state == StateFailed {
				log.WithFields(fields).WithField("lastOutput", lastLines(s.ctrd.sink.Ring, 5)).Error("containerd is failing")
			} else {
				log.WithFields(fields).Error("containerd died; restarting it and then its services")
			}
			select {
			case <-time.After(delay):
			case <-s.stopAll:
				return
			}
			next, err := s.launchContainerd()
			if err == nil {
				d = next
				break
			}
			exit, ran = &ExitInfo{Code: -1, Error: err.Error(), Time: time.Now(), Ran: "0s"}, 0
		}
	}
}

// awaitContainerdExit runs d's liveness check until d exits and returns
// how the run ended and how long it lasted; nil when ddinit is stopping.
func (s *Supervisor) awaitContainerdExit(d *daemon, log *logrus.Entry) (*ExitInfo, time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	cause := make(chan string, 1)
	go liveness{
		timing:  s.cfg.Liveness,
		resting: s.resting.Load,
		times:   s.cpuTimesOf(d.pid),
		check: func(ctx context.Context) error {
			_, err := d.client.Version(ctx)
			return err
		},
		failing: func(silent, starved time.Duration, err error) {
			reason := notAnswering(silent, starved, err)
			s.update(s.ctrd, func(st *Status) { st.State, st.Ready, st.Reason = StateUnresponsive, false, reason })
			log.WithField("reason", reason).Warn("containerd is not answering")
		},
		recovered: func() {
			s.update(s.ctrd, func(st *Status) { st.State, st.Ready, st.Reason = StateRunning, true, "" })
			log.Info("containerd answers again")
		},
		kill: func(reason string) {
			cause <- reason
			log.WithField("reason", reason).Error("containerd is not answering; killing it")
			syscall.Kill(d.pid, syscall.SIGKILL)
		},
	}.run(ctx)
	ws := <-d.wait
	cancel()
	ran := time.Since(d.started)
	close(d.exited)
	s.mu.Lock()
	stopping := s.stopping
	if s.cur == d {
		s.cur = nil
	}
	s.mu.Unlock()
	close(d.down)
	d.client.Close()
	if stopping {
		s.update(s.ctrd, func(st *Status) { st.State, st.Ready, st.PID = StateStopped, false, 0 })
		return nil, ran
	}
	exit := &ExitInfo{Code: ws.ExitStatus(), Time: time.Now(), Ran: ran.Round(time.Millisecond).String(), Output: tailText(s.ctrd.sink.Ring, 10)}
	if ws.Signaled() {
		exit.Code, exit.Signal = 128+int(ws.Signal()), unix.SignalName(ws.Signal())
	}
	select {
	case exit.Cause = <-cause:
	default:
	}
	return exit, ran
}

// removeStale deletes, in the services namespace, the containers of
// services that will not run (a service turned off, one the version pack
// no longer has) and their tasks. Those of the services that will run are
// kept: each start replaces what it cannot use (containerFor).
func (s *Supervisor) removeStale(client *containerd.Client) error {
	containers, err := client.Containers(s.ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range containers {
		if svc := s.find(c.ID()); svc != nil && svc != s.ctrd && svc.status().State != StateDisabled {
			continue
		}
		s.cfg.Log.WithField("container", c.ID()).Info("removing a service container left by an earlier run")
		errs = append(errs, s.removeContainer(c))
	}
	return errors.Join(errs...)
}

// removeContainer deletes c and, killed first, its task if it has one.
func (s *Supervisor) removeContainer(c containerd.Container) error {
	return removeContainerIn(s.ctx, c)
}

// removeContainerIn deletes c in the namespace ctx carries.
func removeContainerIn(ctx context.Context, c containerd.Container) error {
	id := c.ID()
	if t, err := c.Task(ctx, nil); err == nil {
		if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	}
	if err := c.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// clearNamespace removes every container of the containerd namespace ns,
// killing its task first, and says how many there were. Images and
// snapshots stay (a cluster switched on again starts from them).
func (s *Supervisor) clearNamespace(client *containerd.Client, ns string) (int, error) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), time.Minute)
	defer cancel()
	containers, err := client.Containers(ctx)
	if err != nil {
		return 0, fmt.Errorf("list the containers of %s: %w", ns, err)
	}
	var errs []error
	for _, c := range containers {
		errs = append(errs, removeContainerIn(ctx, c))
	}
	return len(containers), errors.Join(errs...)
}

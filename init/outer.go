package initd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Outer is `ddinit run`: it starts PID 1 in new namespaces, relays
// signals to it, exposes its sockets and returns its exit status. Any
// failure is reported as one line on stderr naming the cause.
func Outer(cfg Config, stderr io.Writer) int {
	cfg.Defaults()
	fail := func(err error) int {
		fmt.Fprintf(stderr, "ddinit: boot failed: %s\n", oneLine(err.Error()))
		return 1
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	level, err := logrus.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fail(fmt.Errorf("logLevel %q: %w", cfg.LogLevel, err))
	}
	ds, err := mounts.OpenDataStore(cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	lock, err := lockDataStore(ds.Dir)
	if err != nil {
		return fail(err)
	}
	defer lock.Close()
	logFile, err := logs.OpenRotating(ds.Path("log/ddinit.log"), logs.MaxFileBytes, logs.KeepFiles)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	log := logs.New("ddinit", stderr, logFile, level)
	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return fail(fmt.Errorf("run directory %s: %w", cfg.RunDir, err))
	}
	o := &outer{cfg: cfg, log: log}
	code, err := o.run()
	if err != nil {
		log.WithError(err).Error("boot failed")
		logFile.Sync()
		return fail(err)
	}
	log.WithField("status", code).Info("ddinit exited")
	return code
}

func oneLine(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ") }

// lockDataStore keeps a second ddinit off the same data store.
func lockDataStore(dir string) (*os.File, error) {
	path := filepath.Join(dir, ".ddinit.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data store lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("data store %s is in use by another ddinit (it holds %s)", dir, path)
		}
		return nil, fmt.Errorf("lock data store %s: %w", dir, err)
	}
	return f, nil
}

type outer struct {
	cfg Config
	log *logrus.Entry

	mu            sync.Mutex
	forwarders    []*vsock.Forwarder
	bootError     string
	unixSockets   []string // control sockets to remove at exit
	link          *network.Link
	stopPublisher func()
	rootDir       *os.File // PID 1's root, for iptables after PID 1 is gone
	drives        *net.UnixConn
	stopFollowing context.CancelFunc
}

func (o *outer) run() (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("find ddinit's own binary: %w", err)
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	// The control API's sockets are opened here and handed to PID 1, which
	// serves on them from its first moment, before the root even exists.
	controlFiles, err := o.openControlSockets()
	defer o.removeUnixSockets()
	if err != nil {
		return 1, err
	}
	drivesHere, drivesThere, err := socketPair()
	if err != nil {
		return 1, err
	}
	cmd := exec.Command(self, innerProcessArgument)
	cmd.Args[0] = "ddinit"
	cmd.ExtraFiles = append([]*os.File{cfgR, evW, drivesThere}, controlFiles...) // fds 3, 4, 5, then 6…
	cmd.Stderr = logW
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		// If ddinit run dies, PID 1 dies, and the kernel ends the namespace.
		Pdeathsig: unix.SIGKILL,
	}
	// Relay before starting so a signal during the start is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start PID 1 in new namespaces: %w", err)
	}
	cfgR.Close()
	evW.Close()
	logW.Close()
	drivesThere.Close()
	drives, err := unixConn(drivesHere)
	if err != nil {
		cmd.Process.Kill()
		return 1, fmt.Errorf("drives socket: %w", err)
	}
	o.drives = drives
	for _, f := range controlFiles {
		f.Close()
	}
	pid := cmd.Process.Pid
	o.cfg.HostPID = pid
	json.NewEncoder(cfgW).Encode(o.cfg)
	cfgW.Close()
	o.log.WithField("pid", pid).Info("PID 1 started in new namespaces")

	relayed := make(chan struct{})
	go func() {
		logs.Relay(logR, o.log)
		close(relayed)
	}()
	evDone := make(chan struct{})
	go func() {
		o.readEvents(evR, pid, cmd.Process)
		close(evDone)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	for done := false; !done; {
		select {
		case sig := <-sigs:
			o.log.WithField("signal", sig.String()).Info("stopping")
			cmd.Process.Signal(unix.SIGTERM)
		case waitErr = <-exited:
			done = true
		}
	}
	o.closeForwarders()
	o.mu.Lock()
	if o.stopFollowing != nil {
		o.stopFollowing()
	}
	o.mu.Unlock()
	o.drives.Close()
	<-relayed
	<-evDone
	o.unwireNetwork()
	// Mount points PID 1 made on the distro's file system; its mounts went
	// with its namespace, the empty directories are left to remove.
	for _, d := range []string{"rootfs", "upper", "layers"} {
		removeEmptyTree(filepath.Join(o.cfg.RunDir, d))
	}
	code := 0
	if waitErr != nil {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return 1, waitErr
		}
		ws := ee.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	o.log.WithField("ranFor", time.Since(start).Round(time.Millisecond).String()).Debug("PID 1 exited")
	o.mu.Lock()
	bootErr := o.bootError
	o.mu.Unlock()
	if bootErr != "" {
		return code, errors.New(bootErr)
	}
	if code != 0 {
		return code, fmt.Errorf("PID 1 exited with status %d; see %s", code, filepath.Join(o.cfg.DataDir, "log/ddinit.log"))
	}
	return code, nil
}

// readEvents handles what PID 1 reports: its sockets (which are then
// exposed) and a boot failure.
func (o *outer) readEvents(r io.Reader, pid int, proc *os.Process) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		var ev event
		if json.Unmarshal(s.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "failed":
			o.mu.Lock()
			o.bootError = ev.Error
			o.mu.Unlock()
		case "sockets":
			// PID 1's root is in place: its iptables can set up NAT, and
			// its /dev and drives can follow the distro's.
			o.wireNetwork(pid, ev.Sockets)
			o.follow(pid)
			if err := o.expose(pid, ev.Sockets); err != nil {
				o.mu.Lock()
				o.bootError = err.Error()
				o.mu.Unlock()
				o.log.WithError(err).Error("cannot expose sockets; stopping")
				proc.Signal(unix.SIGTERM)
				continue
			}
			// The busy part of this process's life is over: it now relays
			// logs and connections.
			go settle(o.log)
		}
	}
}

// follow starts keeping PID 1's drives and devices in step with the
// distro's.
func (o *outer) follow(pid int) {
	ctx, cancel := context.WithCancel(context.Background())
	o.mu.Lock()
	o.stopFollowing = cancel
	o.mu.Unlock()
	go o.sendDrives(ctx, o.drives)
	go o.mirrorDevices(ctx, pid)
}

// openControlSockets opens a listening socket per control address (unix
// sockets mode 0600: the API can stop the engine).
func (o *outer) openControlSockets() ([]*os.File, error) {
	var files []*os.File
	for _, s := range o.cfg.Control {
		a, err := vsock.Parse(s)
		if err != nil {
			return files, err
		}
		f, err := vsock.ListenFile(a, 0o600)
		if err != nil {
			return files, fmt.Errorf("control API: %w", err)
		}
		if a.Scheme == "unix" {
			o.unixSockets = append(o.unixSockets, a.Path)
		}
		files = append(files, f)
	}
	return files, nil
}

func (o *outer) removeUnixSockets() {
	for _, p := range o.unixSockets {
		os.Remove(p)
	}
}

// expose starts a forwarder per --expose NAME=ADDR, to the socket PID 1
// reported under NAME, reached through /proc/PID/root.
func (o *outer) expose(pid int, sockets map[string]string) error {
	exposed := map[string]Addrs{}
	for n, a := range o.cfg.Expose {
		exposed[n] = a
	}
	// Distros with WSL integration find the docker socket on the tmpfs
	// every distro shares. Only a socket file is made there: no mount, so
	// nothing ddinit does can take another distro's view of it away.
	if st, err := os.Stat(o.cfg.WSLShared); err == nil && st.IsDir() && sockets["docker"] != "" {
		shared := filepath.Join(o.cfg.WSLShared, SharedSocketsDir, "docker.sock")
		exposed["docker"] = append(append(Addrs(nil), exposed["docker"]...), "unix://"+shared)
		o.unixSockets = append(o.unixSockets, shared)
	}
	names := make([]string, 0, len(exposed))
	for n := range exposed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		inner, ok := sockets[name]
		if !ok {
			known := make([]string, 0, len(sockets))
			for k := range sockets {
				known = append(known, k)
			}
			sort.Strings(known)
			return fmt.Errorf("--expose %s: no service socket named %s (known: %s)", name, name, strings.Join(known, ", "))
		}
		target := fmt.Sprintf("/proc/%d/root%s", pid, inner)
		for _, s := range exposed[name] {
			addr, _ := vsock.Parse(s)
			l, err := vsock.Listen(addr)
			if err != nil {
				return fmt.Errorf("--expose %s: %w", name, err)
			}
			log := o.log.WithFields(logrus.Fields{"expose": name, "addr": addr.String()})
			f := &vsock.Forwarder{
				Name:     name,
				Listener: vsock.Filter(l, addr, vsock.PeerPolicy{AllowLocal: o.cfg.VsockAllowLocal}, log),
				Dial: func(ctx context.Context) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", target)
				},
				Log: log,
			}
			o.mu.Lock()
			o.forwarders = append(o.forwarders, f)
			o.mu.Unlock()
			go f.Serve(context.Background())
			log.WithField("target", inner).Info("socket exposed")
		}
	}
	return nil
}

// removeEmptyTree removes dir and its subdirectories, but only while they
// are empty directories: nothing with content is ever removed.
func removeEmptyTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			removeEmptyTree(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir) // fails, harmlessly, when not empty
}

// wireNetwork connects PID 1's network namespace to the distro's and
// starts publishing container ports. A failure leaves the engine running
// without outside network, and says so.
func (o *outer) wireNetwork(pid int, sockets map[string]string) {
	root := fmt.Sprintf("/proc/%d/root", pid)
	log := o.log.WithField("component", "network")
	// Held open so that the NAT rules can still be removed with the pack's
	// iptables after PID 1, and its namespace, are gone.
	rootDir, err := os.Open(root)
	if err != nil {
		log.WithError(err).Error("containers will have no network beyond the namespace")
		return
	}
	o.mu.Lock()
	o.rootDir = rootDir
	o.mu.Unlock()
	// The child resolves this before it execs, while it still holds a copy
	// of the descriptor.
	chroot := fmt.Sprintf("/proc/self/fd/%d", rootDir.Fd())
	subnet6 := o.cfg.Subnet6
	if subnet6 == "off" {
		subnet6 = ""
	}
	packTool := func(path string) func(args ...string) *exec.Cmd {
		return func(args ...string) *exec.Cmd {
			c := exec.Command(path, args...)
			c.SysProcAttr = &syscall.SysProcAttr{Chroot: chroot}
			c.Dir = "/"
			c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
			return c
		}
	}
	link, err := network.Wire(pid, network.Config{
		Subnet:    o.cfg.Subnet,
		Subnet6:   subnet6,
		Iptables:  packTool("/usr/sbin/iptables"),
		Ip6tables: packTool("/usr/sbin/ip6tables"),
		Log:       log,
	})
	if err != nil {
		log.WithError(err).Error("containers will have no network beyond the namespace")
		return
	}
	o.mu.Lock()
	o.link = link
	o.mu.Unlock()
	if sockets["docker"] == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	pub := &network.Publisher{DockerSocket: root + sockets["docker"], Target: link.InnerAddr.Addr(), Log: log}
	done := make(chan struct{})
	go func() { pub.Run(ctx); close(done) }()
	o.mu.Lock()
	o.stopPublisher = func() { cancel(); <-done }
	o.mu.Unlock()
}

// unwireNetwork closes the published ports and removes the link and the
// NAT rules.
func (o *outer) unwireNetwork() {
	o.mu.Lock()
	stop, link, rootDir := o.stopPublisher, o.link, o.rootDir
	o.stopPublisher, o.link, o.rootDir = nil, nil, nil
	o.mu.Unlock()
	if stop != nil {
		stop()
	}
	if link != nil {
		if err := link.Close(); err != nil {
			o.log.WithError(err).Warn("network cleanup incomplete")
		}
	}
	if rootDir != nil {
		rootDir.Close()
	}
}

func (o *outer) closeForwarders() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, f := range o.forwarders {
		f.Listener.Close()
	}
}

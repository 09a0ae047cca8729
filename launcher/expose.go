package launcher

import (
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// openControlSockets opens a listening socket per control address (unix
// sockets mode 0600: the API can stop the engine).
func (l *launcher) openControlSockets() ([]*os.File, error) {
	var files []*os.File
	for _, s := range l.cfg.Control {
		a, err := transport.Parse(s)
		if err != nil {
			return files, err
		}
		f, err := transport.ListenFile(a, 0o600)
		if err != nil {
			return files, fmt.Errorf("control API: %w", err)
		}
		if a.Scheme == "unix" {
			l.unixSockets = append(l.unixSockets, a.Path)
		}
		files = append(files, f)
	}
	return files, nil
}

// closeControlSockets closes the control sockets and removes their files
// (and the shared docker socket's).
func (l *launcher) closeControlSockets() {
	for _, f := range l.controlFiles {
		f.Close()
	}
	l.controlFiles = nil
	for _, p := range l.unixSockets {
		os.Remove(p)
	}
	l.unixSockets = nil
}

// expose starts a forwarder per --expose NAME=ADDR, to the socket PID 1
// reported under NAME, reached through /proc/PID/root. For a PID 1 that
// replaces another in the same run, the forwarders are already there,
// holding clients: they are pointed at the new PID 1's sockets, and the
// clients pass once its engine is ready (engineReady).
func (l *launcher) expose(pid int, sockets map[string]string) error {
	targets := map[string]string{}
	for name, inner := range sockets {
		targets[name] = fmt.Sprintf("/proc/%d/root%s", pid, inner)
		if strings.HasPrefix(inner, tcpTarget) {
			targets[name] = inner // across the link, not a file
		}
	}
	l.mu.Lock()
	l.exposure.targets = targets
	again := len(l.exposure.forwarders) > 0
	l.mu.Unlock()
	if again {
		for name := range l.cfg.Expose {
			if _, ok := sockets[name]; !ok {
				l.log.WithField("expose", name).Error("this version pack has no service socket of that name: its clients are refused")
			}
		}
		return nil
	}
	l.hold.open()
	exposed := map[string]config.Addrs{}
	for n, a := range l.cfg.Expose {
		exposed[n] = a
	}
	// Distros with WSL integration find the docker socket on the tmpfs
	// every distro shares. Only a socket file is made there: no mount, so
	// nothing ddinit does can take another distro's view of it away.
	// Beside it, root's only, the socket of the distros' proxies, which
	// alone may mark requests as ddinit's own (not keeping the engine up)
	// and say which distro they come from.
	var shared, proxies string
	if st, err := os.Stat(l.cfg.WSLShared); err == nil && st.IsDir() && sockets["docker"] != "" {
		shared = filepath.Join(l.cfg.WSLShared, config.SharedSocketsDir, "docker.sock")
		proxies = filepath.Join(l.cfg.WSLShared, config.SharedSocketsDir, config.ProxiesSocket)
		exposed["docker"] = append(append(config.Addrs(nil), exposed["docker"]...), "unix://"+shared, "unix://"+proxies)
		l.unixSockets = append(l.unixSockets, shared, proxies)
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
		for _, s := range exposed[name] {
			addr, _ := transport.Parse(s)
			// root and the docker group where the distro has one, 0660, as
			// Docker Engine on Linux (vsock has no file to own); the
			// proxies' socket root's alone.
			mode, gid := os.FileMode(0o660), transport.DockerGroup()
			if addr.Path == proxies && proxies != "" {
				mode, gid = 0o600, 0
			}
			listener, err := transport.ListenOwned(addr, mode, gid)
			if err != nil {
				return fmt.Errorf("--expose %s: %w", name, err)
			}
			log := l.log.WithFields(logrus.Fields{"expose": name, "addr": addr.String()})
			f := &transport.Forwarder{
				Name:     name,
				Listener: transport.Filter(listener, addr, transport.PeerPolicy{AllowLocal: l.cfg.VsockAllowLocal}, log),
				// Through the holder: a stopped engine wakes for a client.
				Dial: func(ctx context.Context) (net.Conn, error) {
					return l.hold.dial(ctx, func(ctx context.Context) (net.Conn, error) { return l.dialService(ctx, name) })
				},
				DialTimeout: holdFor + 10*time.Second,
				Log:         log,
			}
			if name == "docker" || name == "dockerd" {
				p := l.dockerProxy(f.Dial, log)
				// Who its clients are, for the budgets they share: the
				// Windows side as a whole, the distros by the name their
				// proxies give, the rest by the socket they use.
				switch {
				case addr.Scheme == "vsock":
					p.Side = "windows"
				case addr.Path == proxies && proxies != "":
					p.Trusted = true
				case addr.Path == shared && shared != "":
					p.Side = "shared-socket"
				default:
					p.Side = addr.String()
				}
				f.Handle = p.Handle
			}
			l.mu.Lock()
			l.exposure.forwarders = append(l.exposure.forwarders, f)
			l.exposure.serving.Add(1)
			l.mu.Unlock()
			go func() {
				defer l.exposure.serving.Done()
				f.Serve(context.Background())
			}()
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

// dialService dials the running PID 1's socket of the service name.
func (l *launcher) dialService(ctx context.Context, name string) (net.Conn, error) {
	l.mu.Lock()
	target, ok := l.exposure.targets[name]
	l.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("the version pack running has no service socket named %s", name)
	}
	if addr, ok := strings.CutPrefix(target, tcpTarget); ok {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	return transport.DialUnix(ctx, target)
}

// tcpTarget marks a service PID 1 reports by its TCP address in its
// namespace, reached across the link (the Kubernetes API server), not by
// a socket file.
const tcpTarget = "tcp:"

// unexpose ends a PID 1's exposure: when another PID 1 follows in this
// run, the sockets stay, holding every new client until its engine is
// ready; otherwise they close.
func (l *launcher) unexpose() {
	if why := l.nextBootReason(); why != "" {
		l.hold.suspend(why)
		return
	}
	l.closeForwarders()
}

func (l *launcher) closeForwarders() {
	l.hold.close() // held dials end first: nothing wakes the engine now
	l.mu.Lock()
	for _, f := range l.exposure.forwarders {
		f.Listener.Close()
	}
	l.exposure.forwarders = nil // a boot after a rollback exposes anew
	l.mu.Unlock()
	l.exposure.serving.Wait() // each closes the connections it still serves
}

// dockerProxy is the docker API proxy on an exposed docker socket: bind
// sources from Windows mapped to the drives inside, published ports
// reserved in the distro before a container starts.
func (l *launcher) dockerProxy(dial func(context.Context) (net.Conn, error), log logrus.FieldLogger) *dockerproxy.Proxy {
	windows := dockerproxy.WindowsPaths{
		Inside: mounts.DrivesTarget,
		Mounted: func(letter string) bool {
			drives, err := mounts.Drives("/proc/self/mountinfo", l.cfg.AutomountRoot)
			return err == nil && slices.ContainsFunc(drives, func(d mounts.Drive) bool { return d.Letter == letter })
		},
	}
	// Windows paths: the drives, and the distros' files (\\wsl$\<distro>\…)
	// through that distro's proxy; the containers are labelled with what
	// was bound, so that proxy keeps its binds while they exist.
	wsl := distroproxy.NewWSLPaths(l.cfg.WSLShared)
	// The publisher, the names and the proxy plan are the running PID 1's
	// (the proxy outlives a PID 1 that is replaced): each is looked up
	// when a request needs it.
	p := &dockerproxy.Proxy{Dial: dial, DialTimeout: holdFor + 10*time.Second, Translate: dockerproxy.Chain(windows.Translate, wsl.Translate), Label: distroproxy.LabelBinds, Answered: l.firstAnswer, Ports: currentPublisher{l}, Log: log}
	// The settings' proxy reaches new containers and builds.
	p.Edits = append(p.Edits, dockerproxy.AddEnv(l.relays.proxyEnv))
	p.BuildArgs = l.relays.proxyEnv
	// A container whose DNS is not ddinit's forwarder still finds the host
	// and the distro by name: in /etc/hosts, as they are at its creation
	// (only then: /etc/hosts would shadow answers that follow a route
	// change).
	daemonJSON := l.ds.Path("etc/docker/daemon.json")
	p.Edits = append(p.Edits, dockerproxy.AddHosts(l.localHosts, func(c *dockerproxy.Create) (bool, error) {
		if daemonSetsDNS(daemonJSON) {
			return true, nil
		}
		return c.SetsDNS()
	}))
	return p
}

// currentPublisher reserves a container's ports with the running PID 1's
// publisher (none without a network: nothing to reserve); while PID 1 is
// replaced, with the new one's, once its engine is ready.
type currentPublisher struct{ l *launcher }

func (c currentPublisher) Reserve(ctx context.Context, container string) (func(), error) {
	c.l.hold.awaitReplaced(ctx)
	c.l.mu.Lock()
	pub := c.l.net.publisher
	c.l.mu.Unlock()
	if pub == nil {
		return func() {}, nil
	}
	return pub.Reserve(ctx, container)
}

// localHosts is the host's and the distro's names and addresses, through
// the running PID 1's link (none without one).
func (l *launcher) localHosts() map[string]string {
	l.mu.Lock()
	names := l.net.names
	l.mu.Unlock()
	if names == nil {
		return nil
	}
	return names.hosts()
}

// firstAnswer tells PID 1, once a boot, that an exposed socket passed the
// engine's first answer on: the end of the boot's timeline.
func (l *launcher) firstAnswer() {
	if l.answered.CompareAndSwap(false, true) {
		if !l.tellPID1(wire.Message{Kind: wire.Marks, Marks: []timeline.Mark{{Event: wire.FirstAnswerMark, At: time.Now()}}}) {
			l.answered.Store(false) // told with the next answer
		}
	}
}

// publishBinary puts a copy of ddinit in the shared tmpfs, where every
// distro finds it to run `ddinit proxy`: only a static build runs in any
// distro, glibc or musl, so only a static build is put there.
func (l *launcher) publishBinary() {
	if st, err := os.Stat(l.cfg.WSLShared); err != nil || !st.IsDir() {
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	if static, err := isStatic(self); err != nil || !static {
		l.log.Debug("ddinit is not statically linked: no copy for the distros' proxies")
		return
	}
	dst := filepath.Join(l.cfg.WSLShared, config.SharedBinary)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		l.log.WithError(err).Warn("the distros' proxies will not find ddinit in the shared tmpfs")
		return
	}
	if err := atomicfile.Copy(self, dst, 0o755); err != nil {
		l.log.WithError(err).Warn("the distros' proxies will not find ddinit in the shared tmpfs")
		return
	}
	l.log.WithField("path", dst).Info("ddinit published for the distros' proxies")
}

// isStatic reports whether the ELF file at path has no program
// interpreter: it needs no dynamic loader.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

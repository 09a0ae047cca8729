package initd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Paths inside the namespace, after the pivot.
const (
	innerRunDir          = "/run/ddinit"
	containerdSocket     = "/run/containerd/containerd.sock"
	containerdBinary     = "/usr/bin/containerd"
	innerLogDir          = "/var/log/ddinit"
	hostRoot             = "/run/ddinit/rootfs"
	servicesNamespace    = "services.ddinit"
	configFD, eventsFD   = 3, 4
	firstControlFD       = 5
	innerProcessArgument = "init"
)

// event is what the inner process tells the outer one, one JSON line each,
// on the events pipe.
type event struct {
	Event   string            `json:"event"` // "sockets" or "failed"
	Sockets map[string]string `json:"sockets,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// Phase is a step of the boot and how long it took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
}

// inner is PID 1's state.
type inner struct {
	cfg    Config
	log    *logrus.Entry
	reaper *Reaper
	events *json.Encoder

	started  time.Time
	ownLog   *logs.Ring
	shutdown chan string // why to stop: a signal or the control API
	server   *vsock.ControlServer

	mu         sync.Mutex
	state      string
	reason     string
	phases     []Phase
	ds         *mounts.DataStore
	root       *rootfs.Root
	components []vsock.Component
	drives     []vsock.Drive
	binds      []mounts.DistroBind // what was bound from the distro
	sup        *services.Supervisor
}

// Inner is `ddinit init`: PID 1 of the namespaces `ddinit run` made. It
// reads its config from fd 3 and reports to the outer process on fd 4.
func Inner(stderr io.Writer) int {
	if os.Getpid() != 1 {
		fmt.Fprintln(stderr, "ddinit: `ddinit init` is PID 1 of the namespaces `ddinit run` creates; start ddinit with `ddinit run`")
		return 2
	}
	cfgFile := os.NewFile(configFD, "config")
	var cfg Config
	err := json.NewDecoder(cfgFile).Decode(&cfg)
	cfgFile.Close()
	if err != nil {
		fmt.Fprintf(stderr, "ddinit: init: read config from ddinit run: %v\n", err)
		return 2
	}
	level, err := logrus.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = logrus.InfoLevel
	}
	eventsFile := os.NewFile(eventsFD, "events")
	in := &inner{
		cfg:      cfg,
		log:      logs.New("init", stderr, nil, level),
		events:   json.NewEncoder(eventsFile),
		started:  time.Now(),
		ownLog:   logs.NewRing(2000),
		shutdown: make(chan string, 4),
		state:    stateBooting,
		reason:   "starting",
	}
	in.log.Logger.AddHook(ownLogHook{ring: in.ownLog})
	in.reaper = NewReaper(in.log)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	go func() {
		for sig := range sigs {
			in.shutdown <- "signal " + sig.String()
		}
	}()
	// The control API answers from the first moment, so the frontend can
	// watch the boot: /ping says 503 and why until the services are ready.
	if err := in.serveControl(); err != nil {
		in.events.Encode(event{Event: "failed", Error: err.Error()})
		return 1
	}
	if err := in.up(); err != nil {
		in.setState(stateFailed, err.Error())
		in.events.Encode(event{Event: "failed", Error: err.Error()})
		in.log.WithError(err).Error("boot failed")
		in.down()
		return 1
	}
	in.setState(stateRunning, "")
	go settle(in.log)
	why := <-in.shutdown
	in.log.WithField("by", why).Info("shutting down")
	in.down()
	return 0
}

// serveControl serves the control API on the sockets ddinit run opened
// (fds 5… in the order of cfg.Control).
func (in *inner) serveControl() error {
	var ls []net.Listener
	for i, s := range in.cfg.Control {
		a, err := vsock.Parse(s)
		if err != nil {
			return err
		}
		l, err := vsock.FileListener(a, os.NewFile(uintptr(firstControlFD+i), s))
		if err != nil {
			return fmt.Errorf("control API on %s: %w", s, err)
		}
		ls = append(ls, vsock.Filter(l, a, vsock.PeerPolicy{AllowLocal: in.cfg.VsockAllowLocal}, in.log))
	}
	in.server = &vsock.ControlServer{Backend: control{in}, Log: in.log.WithField("component", "control")}
	in.server.Serve(ls...)
	return nil
}

// settle hands the heap the boot needed back to the kernel once the
// services have had time to come up: both processes then idle for hours.
func settle(log logrus.FieldLogger) {
	time.Sleep(time.Second)
	debug.FreeOSMemory()
	log.Debug("boot heap returned to the kernel")
}

func (in *inner) phase(name string, start time.Time) {
	d := time.Since(start)
	in.mu.Lock()
	in.phases = append(in.phases, Phase{Name: name, Duration: d})
	in.mu.Unlock()
	in.log.WithFields(logrus.Fields{"phase": name, "ms": float64(d.Microseconds()) / 1000}).Info("boot phase done")
}

func (in *inner) up() error {
	cfg := in.cfg
	t := time.Now()
	in.setState(stateBooting, "checking the data store")
	// Our mounts must never reach the distro, while the distro's later
	// mounts (a drive appearing) still reach us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the mount namespace private: %w", err)
	}
	ds, err := mounts.OpenDataStore(cfg.DataDir)
	if err != nil {
		return err
	}
	if ds.LowSpace {
		in.log.WithFields(logrus.Fields{"dataDir": ds.Dir, "freeMB": ds.FreeBytes >> 20}).Warn("the data store is nearly full")
	}
	in.mu.Lock()
	in.ds = ds
	in.mu.Unlock()
	in.phase("datastore", t)

	t = time.Now()
	in.setState(stateBooting, "verifying and preparing the images")
	root, err := rootfs.Prepare(rootfs.PrepareOptions{
		CacheDir: ds.Path("isocache"),
		Images: []rootfs.Source{
			{Name: "base", Path: cfg.BaseImage, Digest: cfg.BaseDigest},
			{Name: "version pack", Path: cfg.VersionPack, Digest: cfg.PackDigest},
		},
		RunDir: cfg.RunDir,
		Target: filepath.Join(cfg.RunDir, "rootfs"),
		Mode:   rootfs.Mode(cfg.ImageMode),
		Log:    in.log.WithField("component", "rootfs"),
	})
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.root = root
	in.mu.Unlock()
	in.phase("rootfs", t)

	t = time.Now()
	in.setState(stateBooting, "mounting")
	if _, err := mountAPIFilesystems(root.Dir); err != nil {
		return err
	}
	// The version pack's daemon.json seeds the store before the store's
	// etc/docker is bound over it.
	if err := seedDockerConfig(root.Dir, ds.Path("etc/docker")); err != nil {
		return err
	}
	if err := copyResolvConf(in.cfg.ResolvConf, root.Dir, in.log); err != nil {
		return err
	}
	if err := in.listDrives(); err != nil {
		return err
	}
	for _, b := range ds.DistroBinds(cfg.AutomountRoot) {
		made, err := b.Mount(root.Dir)
		if made {
			in.mu.Lock()
			in.binds = append(in.binds, b)
			in.mu.Unlock()
		}
		if err != nil {
			return err
		}
	}
	if err := switchRoot(root.Dir); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	if err := bindHostRoot(hostRoot); err != nil {
		return err
	}
	in.phase("mounts", t)
	in.loadComponents()

	t = time.Now()
	in.setState(stateBooting, "starting containerd")
	defs, err := services.LoadDefinitions(services.ServicesDir)
	if err != nil {
		return fmt.Errorf("version pack %s: %w", cfg.VersionPack, err)
	}
	sockets := map[string]string{"containerd": containerdSocket}
	for _, d := range defs {
		if d.Socket != "" {
			sockets[d.Name] = d.Socket
			if d.Name == "dockerd" {
				sockets["docker"] = d.Socket
			}
		}
	}
	in.events.Encode(event{Event: "sockets", Sockets: sockets})
	sup, err := services.New(services.Config{
		Namespace:        servicesNamespace,
		ContainerdBinary: containerdBinary,
		RunDir:           innerRunDir,
		HostRoot:         hostRoot,
		ContainerdRoot:   "/var/lib/containerd",
		ContainerdState:  "/run/containerd",
		Address:          containerdSocket,
		LogDir:           innerLogDir,
		Restart:          cfg.RestartPolicy(),
		Liveness:         cfg.LivenessTiming(),
		Settings:         map[string]bool{"kubernetes": cfg.Kubernetes},
		Spawner:          in.reaper,
		Log:              in.log.WithField("component", "supervisor"),
	}, defs)
	if err != nil {
		return err
	}
	if err := sup.Start(); err != nil {
		return err
	}
	in.mu.Lock()
	in.sup = sup
	in.mu.Unlock()
	in.phase("containerd", t)
	return nil
}

// listDrives records, for /status, the Windows drives the automount root
// holds; they come in with its bind.
func (in *inner) listDrives() error {
	if _, err := os.Stat(in.cfg.AutomountRoot); err != nil {
		in.log.WithField("automountRoot", in.cfg.AutomountRoot).Info("no automount root: no Windows drives")
		return nil
	}
	drives, err := mounts.Drives("/proc/self/mountinfo", in.cfg.AutomountRoot)
	if err != nil {
		return fmt.Errorf("list the Windows drives: %w", err)
	}
	var list []vsock.Drive
	for _, d := range drives {
		list = append(list, vsock.Drive{Letter: d.Letter, Path: d.Path, Inside: filepath.Join(mounts.DrivesTarget, d.Letter), FSType: d.FSType})
	}
	in.mu.Lock()
	in.drives = list
	in.mu.Unlock()
	in.log.WithField("drives", len(list)).Info("Windows drives found")
	return nil
}

// copyResolvConf gives the namespace the distro's resolver configuration,
// which dockerd passes on to containers. A nameserver on the distro's
// loopback cannot be reached from inside: that is said, not hidden.
func copyResolvConf(src, root string, log *logrus.Entry) error {
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		log.WithField("path", src).Warn("the distro has no resolver configuration; containers get docker's default")
		return nil
	}
	if err != nil {
		return fmt.Errorf("resolver configuration: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" && (strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			log.WithField("nameserver", f[1]).Warn("the distro's nameserver is on its loopback, which the namespace cannot reach")
		}
	}
	dst := filepath.Join(root, "etc/resolv.conf")
	os.Remove(dst) // the base image may have a symlink there
	return os.WriteFile(dst, b, 0o644)
}

// loadComponents reads the version pack's manifest for /status.
func (in *inner) loadComponents() {
	b, err := os.ReadFile("/version-pack.json")
	if err != nil {
		in.log.WithError(err).Warn("the version pack has no manifest")
		return
	}
	var m struct {
		Components []vsock.Component `json:"components"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		in.log.WithError(err).Warn("the version pack's manifest is not valid JSON")
		return
	}
	in.mu.Lock()
	in.components = m.Components
	in.mu.Unlock()
}

// seedDockerConfig gives a new data store the version pack's
// /etc/docker (daemon.json); an existing one keeps the user's.
func seedDockerConfig(root, dataEtcDocker string) error {
	entries, err := os.ReadDir(dataEtcDocker)
	if err != nil || len(entries) > 0 {
		return err
	}
	src := filepath.Join(root, "etc/docker/daemon.json")
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dataEtcDocker, "daemon.json"), b, 0o644)
}

// down stops the services and containerd, flushes and unmounts the data
// store. Whatever else was mounted lives in this mount namespace and goes
// with it.
func (in *inner) down() {
	start := time.Now()
	in.mu.Lock()
	if in.state != stateFailed {
		in.state, in.reason = stateStopping, "shutting down"
	}
	in.mu.Unlock()
	if in.sup != nil {
		in.sup.Stop()
	}
	defer in.server.Close()
	unix.Sync()
	var targets []string
	for _, b := range in.binds {
		targets = append(targets, b.Target)
	}
	if err := mounts.Unmount(targets); err != nil {
		in.log.WithError(err).Warn("unmounting the data store")
	}
	in.log.WithField("ms", time.Since(start).Milliseconds()).Info("shutdown complete")
}

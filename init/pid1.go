package initd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Paths inside the namespace, after the pivot.
const (
	innerRunDir        = "/run/ddinit"
	containerdSocket   = "/run/containerd/containerd.sock"
	containerdBinary   = "/usr/bin/containerd"
	innerLogDir        = "/var/log/ddinit"
	hostRoot           = "/run/ddinit/rootfs"
	servicesNamespace  = "services.ddinit"
	configFD, eventsFD = 3, 4
	drivesFD           = 5
	firstControlFD     = 6
	pid1Argument       = "init"
)

// event is what PID 1 tells ddinit run, one JSON line each,
// on the events pipe.
type event struct {
	Event   string            `json:"event"` // "sockets", "failed", "pack-ready" or "pack-failed"
	Sockets map[string]string `json:"sockets,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// Phase is a step of the boot and how long it took.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration"`
}

// pid1 is PID 1's state.
type pid1 struct {
	cfg    Config
	log    *logrus.Entry
	reaper *Reaper
	events *json.Encoder

	started time.Time
	ownLog  *logs.Ring
	stop    chan string // why to stop: a signal or the control API
	server  *control.Server

	mu         sync.Mutex
	state      string
	reason     string
	phases     []Phase
	ds         *mounts.DataStore
	root       *rootfs.Root
	components []control.Component
	drives     []control.Drive
	dns        *control.DNSState // as ddinit run last reported it
	launcher   *net.UnixConn     // the socket to ddinit run (drives come on it)
	defs       []services.Definition
	// dockerSocket is dockerd's socket inside, for the idle check.
	dockerSocket string
	engine       engineState // stopped when idle, woken on demand
	cgroups      *cgroup.Hierarchy
	packCalls    calls[packReply] // PUT /version-pack requests ddinit run answers
	dockerdEnv   []string         // the proxy, for dockerd's next start
	// packBundle is the version pack's CA bundle, before trusted CAs.
	packBundle     []byte
	packBundleRead bool
	// replaced is why this PID 1 is being replaced by ddinit run (a live
	// version-pack switch): from then on it is not healthy, and says why.
	// engineWasUp: dockerd has been ready this boot (a PID 1 that replaced
	// another says why only until then).
	replaced    string
	engineWasUp bool

	mounted  []mounts.Mount // what the mounts phase made, for the shutdown
	switched bool           // the root is the assembled one

	sup *services.Supervisor

	// The boot's timeline, and the last wake's; engineMarks is the one
	// the supervisor's marks go to now (read without in.mu: the
	// supervisor marks from its own goroutines).
	bootMarks   *timeline.Recorder
	wakeMarks   atomic.Pointer[timeline.Recorder]
	engineMarks atomic.Pointer[timeline.Recorder]

	// settings owns the settings document and daemon.json, with its own
	// lock; it answers GET /settings from the first moment.
	settings *settings.Applier
}

// PID1 is `ddinit init`: PID 1 of the namespaces `ddinit run` made. It
// reads its config from fd 3 and reports to the outer process on fd 4.
func PID1(stderr io.Writer) int {
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
	in := &pid1{
		cfg:     cfg,
		log:     logs.New("init", stderr, nil, level),
		events:  json.NewEncoder(eventsFile),
		started: time.Now(),
		ownLog:  logs.NewRing(2000),
		stop:    make(chan string, 4),
		state:   stateBooting,
		reason:  "starting",
	}
	in.log.Logger.AddHook(logs.RingHook{Ring: in.ownLog})
	in.startTimeline()
	in.settings = &settings.Applier{
		Locate:     in.storePath,
		Shown:      func(rel string) string { return in.ds.Path(rel) },
		Forced:     forcedDaemonJSON,
		Kubernetes: cfg.Kubernetes,
		Log:        in.log.WithField("component", "settings"),
	}
	in.reaper = NewReaper(in.log)
	if conn, err := unixConn(os.NewFile(drivesFD, "drives")); err == nil {
		in.launcher = conn
		go in.followDrives(conn)
	} else {
		in.log.WithError(err).Warn("drives mounted after the boot will not appear")
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	go func() {
		for sig := range sigs {
			in.shutdownAsked("signal " + sig.String())
		}
	}()
	// The control API answers from the first moment, so the frontend can
	// watch the boot: /ping says 503 and why until the services are ready.
	if err := in.serveControl(); err != nil {
		// Unreported only if ddinit run is gone, and then nobody asks.
		in.events.Encode(event{Event: "failed", Error: err.Error()})
		return 1
	}
	if err := in.boot(); err != nil {
		in.setState(stateFailed, err.Error())
		in.events.Encode(event{Event: "failed", Error: err.Error()}) // as above
		in.log.WithError(err).Error("boot failed")
		in.shutdown()
		return 1
	}
	in.setState(stateRunning, "")
	idle, stopIdle := context.WithCancel(context.Background())
	idleDone := make(chan struct{})
	go func() {
		defer close(idleDone)
		if settle(idle, in.log) {
			returnIdleHeap(idle)
		}
	}()
	why := <-in.stop
	stopIdle()
	<-idleDone
	in.log.WithField("by", why).Info("shutting down")
	in.shutdown()
	return 0
}

// maxControlConns bounds the control API's connections on one socket: a
// frontend polls with one or two, a person's commands a few more; a
// runaway client holds a quarter of them (transport.LimitPerPeer).
const maxControlConns = 256

// controlListener is a control socket handed over as f, served only to
// the peers it admits (on vsock: the host, and CID 1 when allowLocal),
// each with its share of the connections.
func controlListener(a transport.Addr, f *os.File, allowLocal bool, log logrus.FieldLogger) (net.Listener, error) {
	l, err := transport.FileListener(a, f)
	if err != nil {
		return nil, err
	}
	return transport.LimitPerPeer(transport.Filter(l, a, transport.PeerPolicy{AllowLocal: allowLocal}, log), maxControlConns, log), nil
}

// serveControl serves the control API on the sockets ddinit run opened
// (fds 6… in the order of cfg.Control).
func (in *pid1) serveControl() error {
	var ls []net.Listener
	for i, s := range in.cfg.Control {
		a, err := transport.Parse(s)
		if err != nil {
			return err
		}
		l, err := controlListener(a, os.NewFile(uintptr(firstControlFD+i), s), in.cfg.VsockAllowLocal, in.log)
		if err != nil {
			return fmt.Errorf("control API on %s: %w", s, err)
		}
		ls = append(ls, l)
	}
	in.server = &control.Server{Backend: backend{in}, Log: in.log.WithField("component", "control")}
	in.server.Serve(ls...)
	return nil
}

// settle hands the heap the boot needed back to the kernel once the
// services have had time to come up (both processes then idle for
// hours), and reports false when ctx ended first.
func settle(ctx context.Context, log logrus.FieldLogger) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Second):
	}
	debug.FreeOSMemory()
	log.Debug("boot heap returned to the kernel")
	return true
}

// returnIdleHeap hands back, every idleCheck until ctx ends, the heap a
// burst of work freed (a docker cp through the proxy, a diagnostics
// archive) once there is enough of it: Go's own scavenger keeps it for
// minutes.
func returnIdleHeap(ctx context.Context) {
	free := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	tick := time.NewTicker(idleCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(free)
		if free[0].Value.Kind() == metrics.KindUint64 && free[0].Value.Uint64() >= idleReturnBytes {
			debug.FreeOSMemory()
		}
	}
}

const (
	idleCheck       = 10 * time.Second
	idleReturnBytes = 256 << 10
)

// loadComponents reads the version pack's manifest for /status.
func (in *pid1) loadComponents() {
	b, err := os.ReadFile("/version-pack.json")
	if err != nil {
		in.log.WithError(err).Warn("the version pack has no manifest")
		return
	}
	var m struct {
		Components []control.Component `json:"components"`
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
// /etc/docker (daemon.json); an existing one keeps the user's. It returns
// the pack's daemon.json (nil when it has none): what a daemon.json
// dockerd refuses falls back to when it never accepted one.
func seedDockerConfig(root, dataEtcDocker string) ([]byte, error) {
	pack, err := os.ReadFile(filepath.Join(root, "etc/docker/daemon.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the version pack's daemon.json: %w", err)
	}
	entries, err := os.ReadDir(dataEtcDocker)
	if err != nil {
		return pack, err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") { // a write a crash cut short is no configuration
			return pack, nil
		}
	}
	return pack, atomicfile.Write(filepath.Join(dataEtcDocker, "daemon.json"), pack, 0o644)
}

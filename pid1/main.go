package pid1

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
	"strings"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/idleheap"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Paths inside the namespace, after the pivot.
const (
	innerRunDir       = "/run/ddinit"
	containerdSocket  = "/run/containerd/containerd.sock"
	containerdBinary  = "/usr/bin/containerd"
	innerLogDir       = "/var/log/ddinit"
	hostRoot          = "/run/ddinit/rootfs"
	servicesNamespace = "services.ddinit"
)

// Main is `ddinit init`: PID 1 of the namespaces `ddinit run` made. It
// reads its handoff from fd 3 and talks with ddinit run on fd 4.
func Main(stderr io.Writer) int {
	if os.Getpid() != 1 {
		fmt.Fprintln(stderr, "ddinit: `ddinit init` is PID 1 of the namespaces `ddinit run` creates; start ddinit with `ddinit run`")
		return 2
	}
	f := os.NewFile(wire.HandoffFD, "handoff")
	var h wire.Handoff
	err := json.NewDecoder(f).Decode(&h)
	f.Close()
	if err != nil {
		fmt.Fprintf(stderr, "ddinit: init: read the handoff from ddinit run: %v\n", err)
		return 2
	}
	level, err := logrus.ParseLevel(h.Config.LogLevel)
	if err != nil {
		level = logrus.InfoLevel
	}
	in := &pid1{
		cfg:     h.Config,
		handoff: h,
		log:     logs.New("init", stderr, nil, level),
		started: time.Now(),
		ownLog:  logs.NewRing(2000),
		stop:    make(chan string, 4),
		state:   control.StateBooting,
		reason:  "starting",
		engine:  enginestate.New(enginestate.Running),
	}
	in.log.Logger.AddHook(logs.RingHook{Ring: in.ownLog})
	in.startTimeline()
	in.settings = &settings.Applier{
		Locate:     in.storePath,
		Shown:      func(rel string) string { return in.ds.Path(rel) },
		Forced:     forcedDaemonJSON,
		Kubernetes: h.Config.Kubernetes,
		Log:        in.log.WithField("component", "settings"),
	}
	in.reaper = NewReaper(in.log)
	if conn, err := wire.NewConn(os.NewFile(wire.SocketFD, "wire")); err == nil {
		in.link = conn
	} else {
		in.log.WithError(err).Warn("no socket to ddinit run: drives mounted after the boot will not appear")
	}
	return in.live()
}

// live is PID 1's life: the control API from the first moment, the boot,
// the wait for a stop, the shutdown (the boot undone).
func (in *pid1) live() int {
	if in.link != nil {
		in.bg.Go(in.followLauncher)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	in.bg.Go(func(ctx context.Context) {
		for {
			select {
			case sig := <-sigs:
				in.shutdownAsked("signal " + sig.String())
			case <-ctx.Done():
				return
			}
		}
	})
	// To the end of the process, not just of this function: a PID 1 has
	// no default action for SIGTERM (the kernel drops it), so Go's runtime,
	// finding no handler, would exit with status 2 when ddinit run tells
	// the stop again while PID 1 is still on its way out.
	defer signal.Ignore(unix.SIGTERM, unix.SIGINT)
	code := 0
	// The control API answers from the first moment, so the frontend can
	// watch the boot: /ping says 503 and why until the services are ready.
	if err := in.serveControl(); err != nil {
		in.tell(wire.Message{Kind: wire.BootFailed, Err: wire.EncodeError(err)})
		in.finish()
		return 1
	}
	if err := in.runBoot(); err != nil {
		in.setState(control.StateFailed, err.Error())
		in.tell(wire.Message{Kind: wire.BootFailed, Err: wire.EncodeError(err)})
		in.log.WithError(err).Error("boot failed")
		code = 1
	} else {
		in.setState(control.StateRunning, "")
		in.bg.Go(func(ctx context.Context) {
			if idleheap.Settle(ctx, in.log) {
				idleheap.Watch(ctx)
			}
		})
		why := <-in.stop
		in.log.WithField("by", why).Info("shutting down")
	}
	in.shutdown()
	in.finish()
	return code
}

// finish ends what is left after the shutdown: the socket to ddinit run
// (its follower ends with it) and every goroutine PID 1 started.
func (in *pid1) finish() {
	if in.link != nil {
		in.link.SetReadDeadline(time.Unix(1, 0))
	}
	in.bg.Stop()
	if in.link != nil {
		in.link.Close()
	}
}

// maxControlConns bounds the control API's connections on one socket: a
// frontend polls with one or two, a person's commands a few more; a
// runaway client holds a quarter of them (transport.LimitPerPeer).
const maxControlConns = 256

// serveControl serves the control API on the sockets ddinit run opened
// (fds 5… in the order of the config's Control).
func (in *pid1) serveControl() error {
	var ls []net.Listener
	for i, s := range in.cfg.Control {
		a, err := transport.Parse(s)
		if err != nil {
			return err
		}
		l, err := transport.GuardedFileListener(a, os.NewFile(uintptr(wire.FirstControlFD+i), s), transport.PeerPolicy{AllowLocal: in.cfg.VsockAllowLocal}, maxControlConns, in.log)
		if err != nil {
			return fmt.Errorf("control API on %s: %w", s, err)
		}
		ls = append(ls, l)
	}
	in.server = &control.Server{Backend: backend{in}, Log: in.log.WithField("component", "control")}
	in.server.Serve(ls...)
	return nil
}

// maxManifestBytes bounds the version pack's manifest and daemon.json (a
// few KB): they come from an image, which may be hostile.
const maxManifestBytes = 4 << 20

// loadComponents reads the version pack's manifest for /status.
func (in *pid1) loadComponents(root string) {
	b, err := regularfile.Read(filepath.Join(root, "version-pack.json"), maxManifestBytes)
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
	pack, err := regularfile.Read(filepath.Join(root, "etc/docker/daemon.json"), maxManifestBytes)
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

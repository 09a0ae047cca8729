package pid1

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/kube"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/steps"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// bootSteps is PID 1's boot, in order; its undo, newest first, is the
// shutdown (the control API closes last, after it).
var bootSteps = []steps.Step[*pid1]{
	{Name: "datastore", Doing: "checking the data store", Do: func(in *pid1) (func() error, error) {
		return nil, in.openDataStore()
	}},
	{Name: "rootfs", Doing: "verifying and preparing the images", Do: func(in *pid1) (func() error, error) {
		return nil, in.prepareRoot()
	}},
	{Name: "mounts", Doing: "mounting", Undoing: "flushing the data store and unmounting the distro's file systems", Do: func(in *pid1) (func() error, error) {
		return func() error { unix.Sync(); return in.unmountDistro() }, in.mountNamespace()
	}},
	{Name: "switch-root", Doing: "entering the assembled root", Do: func(in *pid1) (func() error, error) {
		return nil, in.enterRoot()
	}},
	{Name: "containerd", Doing: "starting containerd", Undoing: "stopping the services and containerd", Do: func(in *pid1) (func() error, error) {
		return in.stopServices, in.startServices()
	}},
}

// runBoot runs bootSteps, showing each in /status; it stops at the first
// error.
func (in *pid1) runBoot() error {
	in.boot = steps.Runner{Log: in.log, What: "boot phase",
		Begin: func(_, doing string) { in.setState(control.StateBooting, doing) },
		Done: func(name string, took time.Duration) {
			in.bootMarks.Mark("boot phase " + name + " done")
			in.mu.Lock()
			in.phases = append(in.phases, control.Phase{Name: name, DurationMs: float64(took.Microseconds()) / 1000})
			in.mu.Unlock()
		},
	}
	return steps.Run(&in.boot, bootSteps, in)
}

// shutdown undoes the boot (what of it was done) and closes the control
// API last.
func (in *pid1) shutdown() {
	start := time.Now()
	// Told before the engine stops, so that ddinit run ends its own event
	// streams: dockerd 28 waits up to 5 s at its stop for open requests.
	if in.engine.Step(enginestate.Stopping, "ddinit is stopping", enginestate.Running) {
		in.reportEngine()
	}
	in.boot.Begin = func(_, doing string) {
		in.mu.Lock()
		if in.state != control.StateFailed {
			in.state, in.reason = control.StateStopping, doing
		}
		in.mu.Unlock()
	}
	in.boot.Undo() // each undo that fails is logged; the next one runs
	in.server.Close()
	// ddinit run answers the control sockets from here when another PID 1
	// follows: this one's exit can take a while yet (the namespace's
	// processes reaped).
	in.tell(wire.Message{Kind: wire.ControlClosed})
	in.log.WithField("ms", time.Since(start).Milliseconds()).Info("shutdown complete")
}

func (in *pid1) openDataStore() error {
	// Our mounts must never reach the distro, while the distro's later
	// mounts (a drive appearing) still reach us: rslave, never rprivate.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make the mount namespace a slave of the distro's: %w", err)
	}
	ds, err := mounts.OpenDataStore(in.cfg.DataDir)
	if err != nil {
		return err
	}
	// Folders of the store that were not folders, set aside by ddinit run
	// (or here): in /status's recovered and the log.
	in.settings.AddRecovered(append(in.handoff.Recovered, ds.Recovered...)...)
	if ds.LowSpace {
		in.log.WithFields(logrus.Fields{"dataDir": ds.Dir, "freeMB": ds.FreeBytes >> 20}).Warn("the data store is nearly full")
	}
	in.mu.Lock()
	in.ds = ds
	in.mu.Unlock()
	return nil
}

func (in *pid1) prepareRoot() error {
	cfg := in.cfg
	root, err := rootfs.Prepare(rootfs.PrepareOptions{
		CacheDir: in.ds.Path("isocache"),
		Images: []rootfs.Source{
			{Name: "base", Path: cfg.BaseImage, Digest: cfg.BaseDigest},
			{Name: "version pack", Path: cfg.VersionPack, Digest: cfg.PackDigest},
		},
		RunDir: cfg.RunDir,
		Target: filepath.Join(cfg.RunDir, "rootfs"),
		Mode:   rootfs.Mode(cfg.ImageMode),
		Keep:   in.handoff.PackKeep,
		Log:    in.log.WithField("component", "rootfs"),
	})
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.root = root
	in.mu.Unlock()
	in.openKubernetesImage()
	return nil
}

// mountNamespace makes every mount of mounts.Plan under the assembled
// root, after what must be read from the root first.
func (in *pid1) mountNamespace() error {
	root, ds := in.root.Dir, in.ds
	// The version pack's daemon.json seeds the store before the store's
	// etc/docker is bound over it.
	pack, err := seedDockerConfig(root, ds.Path("etc/docker"))
	if err != nil {
		return err
	}
	if err := writeResolvConf(in.cfg, root, in.log); err != nil {
		return err
	}
	// The stored settings win: dockerd first starts on their daemon.json,
	// with what ddinit forces for this pack's dockerd (its manifest read
	// here, from the assembled root).
	in.loadComponents(root)
	in.settings.Forced = forcedFor(in.componentVersion("dockerd"))
	if err := in.settings.Load(pack); err != nil {
		return err
	}
	if err := in.listDrives(); err != nil {
		return err
	}
	// The folder where the distros' proxies bind their paths: made in the
	// shared tmpfs (a folder, no mount: nothing another distro sees
	// changes), so that their binds propagate in.
	distroBinds := filepath.Join(in.cfg.WSLShared, distroproxy.BindsDir)
	if st, err := os.Stat(in.cfg.WSLShared); err == nil && st.IsDir() {
		if err := os.MkdirAll(distroBinds, 0o755); err != nil {
			return fmt.Errorf("the distros' binds folder: %w", err)
		}
	}
	done, err := mounts.MountAll(mounts.Plan(ds, in.cfg.AutomountRoot, distroBinds, in.cfg.WSLLib), root)
	in.mu.Lock()
	in.mounted = done
	in.mu.Unlock()
	return err
}

// enterRoot pivots into the assembled root and sets up what only exists
// there: the host name, loopback, the root services run on.
func (in *pid1) enterRoot() error {
	if err := switchRoot(in.root.Dir); err != nil {
		return err
	}
	in.mu.Lock()
	in.switched = true
	in.mu.Unlock()
	if err := unix.Sethostname([]byte(in.cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	return bindHostRoot(hostRoot)
}

// startServices starts containerd and the version pack's services, and
// tells ddinit run which sockets to expose.
func (in *pid1) startServices() error {
	defs, err := services.LoadDefinitions(services.ServicesDir)
	if err != nil {
		return fmt.Errorf("version pack %s: %w", in.cfg.VersionPack, err)
	}
	sockets := map[string]string{"containerd": containerdSocket}
	// The Kubernetes API server, for --expose kubernetes=ADDR (the
	// frontend's): a TCP address across the link; refused while it is off.
	if _, inner, err := network.Addrs(in.cfg.Subnet); err == nil {
		sockets["kubernetes"] = fmt.Sprintf("tcp:%s:%d", inner.Addr(), kube.APIPort)
	}
	for _, d := range defs {
		if d.Socket != "" {
			sockets[d.Name] = d.Socket
			if d.Name == "dockerd" {
				sockets["docker"] = d.Socket
			}
		}
	}
	// Unreported only if ddinit run is gone: PID 1 dies with it.
	in.tell(wire.Message{Kind: wire.Sockets, Sockets: sockets})
	// The proxy and CAs in force, in place before dockerd's first start. A
	// plan that cannot be made (two loopback proxies on one port) leaves
	// the engine without a proxy, and says why.
	if err := in.setEnvironment(in.settings.Environment()); err != nil {
		in.log.WithError(err).Error("the settings' proxy and CAs are not in force")
	}
	var h *cgroup.Hierarchy
	if found, err := cgroup.Detect("/sys/fs/cgroup"); err == nil {
		h = &found
		// A ddinit run killed while its engine was paused leaves the parent
		// frozen (cgroups outlive namespaces): containerd would freeze in it.
		if h.Frozen(services.DefaultCgroupParent) {
			in.log.Warn("the engine's cgroup was left frozen by an earlier run; thawing it")
			if err := h.Freeze(services.DefaultCgroupParent, false, 5*time.Second); err != nil {
				return fmt.Errorf("thaw the engine's cgroup left frozen: %w", err)
			}
		}
	} else {
		in.log.WithError(err).Warn("no cgroup hierarchy: the engine cannot be paused apart")
	}
	in.mu.Lock()
	in.defs, in.dockerSocket, in.cgroups = defs, sockets["docker"], h
	in.kube.on = in.settings.KubernetesOn()
	in.mu.Unlock()
	in.tellIdleStop()
	in.tellReach()
	sup, err := in.newSupervisor()
	if err != nil {
		return err
	}
	if err := sup.Start(); err != nil {
		return err
	}
	in.mu.Lock()
	in.sup = sup
	in.mu.Unlock()
	in.clusterStarted(sup, in.runningCluster())
	owned := ownedDaemonKeys(defs, in.settings.Forced)
	in.bg.Go(func(ctx context.Context) { in.guardDaemonJSON(ctx, sup, owned) })
	in.bg.Go(func(ctx context.Context) { in.awaitEngine(ctx, sup) })
	return nil
}

// newSupervisor makes the supervisor of containerd and the services: at
// boot, and at each wake after an idle stop.
func (in *pid1) newSupervisor() (*services.Supervisor, error) {
	in.mu.Lock()
	defs := in.defs
	in.mu.Unlock()
	cfg := in.cfg
	c := in.clusterFor()
	scfg, defs := withCluster(services.Config{
		Namespace:               servicesNamespace,
		ContainerdBinary:        containerdBinary,
		ContainerdConfigVersion: services.ContainerdConfigVersion(in.componentVersion("containerd")),
		RunDir:                  innerRunDir,
		RuntimeBinary:           in.serviceRuntime(),
		HostRoot:                hostRoot,
		ContainerdRoot:          "/var/lib/containerd",
		ContainerdState:         "/run/containerd",
		Address:                 containerdSocket,
		LogDir:                  innerLogDir,
		Restart:                 cfg.RestartPolicy(),
		Liveness:                cfg.LivenessTiming(),
		Settings:                map[string]bool{},
		Env:                     in.serviceEnv,
		Cgroups:                 in.cgroups,
		Mark:                    in.markEngine,
		Milestones:              map[string][]timeline.Milestone{"dockerd": DockerdMilestones},
		Spawner:                 in.reaper,
		Log:                     in.log.WithField("component", "supervisor"),
	}, defs, c, in.log.WithField("component", "kubernetes"))
	sup, err := services.New(scfg, defs)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	in.kube.running = c
	in.mu.Unlock()
	return sup, nil
}

func (in *pid1) stopServices() error {
	// What an idle engine held is not given back under the shutdown (a
	// trim would hold the data store it unmounts).
	in.endGiveBack(true)
	// A frozen engine cannot be stopped (containerd would never answer the
	// kill): thawed first. From here no switch or reset starts an engine.
	in.engineOps.Lock()
	in.mu.Lock()
	in.kube.closing = true
	in.mu.Unlock()
	if err := in.thaw(); err != nil {
		in.log.WithError(err).Warn("the paused engine could not be thawed for the shutdown")
	}
	in.engineOps.Unlock()
	in.mu.Lock()
	sup := in.sup
	in.mu.Unlock()
	in.stopCluster()
	if sup != nil {
		sup.Stop()
	}
	if in.cgroups != nil {
		in.cgroups.Remove(services.DefaultCgroupParent) // empty once the engine is gone
	}
	return nil
}

// unmountDistro takes down the binds from the distro (the data store
// first of all) so that they are released cleanly; the namespace's own
// file systems go with the namespace.
func (in *pid1) unmountDistro() error {
	in.mu.Lock()
	var binds []mounts.Mount
	for _, m := range in.mounted {
		if m.FromDistro {
			binds = append(binds, m)
		}
	}
	in.mu.Unlock()
	return mounts.Unmount(binds, "/")
}

// componentVersion is the version of the version pack's component name,
// as its manifest says ("" when it names none).
func (in *pid1) componentVersion(name string) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, c := range in.components {
		if c.Name == name {
			return c.Version
		}
	}
	return ""
}

// trustOnce runs trustDistro the first time dockerd is ready in this
// PID 1's namespace, on whichever supervisor: the rule stays there
// through idle stops and restarts (ClearEngine keeps DOCKER-USER).
func (in *pid1) trustOnce() { in.trust.Do(in.trustDistro) }

// trustDistro lets the distros' connections to container addresses
// through dockerd's filtering (network.TrustDistro). It runs once dockerd
// is ready (trustOnce), off the boot's path: only a distro's connection
// to a container's IP needs it, and its six runs of the pack's iptables
// took the CPU from containerd's start and dockerd's task when they ran
// beside them (docs/benchmarks.md).
func (in *pid1) trustDistro() {
	if host, _, err := network.Addrs(in.cfg.Subnet); err == nil {
		if err := network.TrustDistro(in.reaper, []netip.Addr{host.Addr()}); err != nil {
			in.log.WithError(err).Warn("the distros may not reach containers by their addresses")
		}
	}
	if in.cfg.Subnet6 == "off" {
		return
	}
	// IPv6 is a bonus on the link (network.Wire): a kernel without
	// ip6tables is no news.
	if host, _, err := network.Addrs6(in.cfg.Subnet6); err == nil {
		if err := network.TrustDistro(in.reaper, []netip.Addr{host.Addr()}); err != nil {
			in.log.WithError(err).Debug("the distros may not reach containers by their IPv6 addresses")
		}
	}
}

// crunBinary is where a version pack carries crun.
const crunBinary = "/usr/bin/crun"

// serviceRuntime is the OCI runtime binary of the services ("": the
// shim's runc): crun where the config asks for it or, by default, where
// the version pack carries it and the cgroup hierarchy is v2 alone, as
// WSL's is (crun 1.8 refuses a hybrid one: "cgroups in hybrid mode not
// supported"). crun creates and starts a task in about a quarter of
// runc's time (docs/benchmarks.md), a share of every boot and wake;
// users' containers keep dockerd's own default, runc.
func (in *pid1) serviceRuntime() string {
	switch in.cfg.ServiceRuntime {
	case "runc":
		return ""
	case "crun":
		return crunBinary
	}
	in.mu.Lock()
	v2 := in.cgroups != nil && in.cgroups.V2
	in.mu.Unlock()
	if st, err := os.Stat(crunBinary); err == nil && st.Mode().IsRegular() && v2 {
		return crunBinary
	}
	return ""
}

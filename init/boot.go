package initd

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/timeline"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// phase is one step of PID 1's boot or shutdown: its name (in /status and
// the log), what the frontend is told while it runs, and the step.
type phase struct {
	name, doing string
	run         func(*pid1) error
}

// bootPhases is PID 1's boot, in order.
var bootPhases = []phase{
	{"datastore", "checking the data store", (*pid1).openDataStore},
	{"rootfs", "verifying and preparing the images", (*pid1).prepareRoot},
	{"mounts", "mounting", (*pid1).mountNamespace},
	{"switch-root", "entering the assembled root", (*pid1).enterRoot},
	{"containerd", "starting containerd", (*pid1).startServices},
}

// shutdownPhases is PID 1's shutdown, in order; a step that fails is
// logged and the next one runs.
var shutdownPhases = []phase{
	{"stop-services", "stopping the services and containerd", (*pid1).stopServices},
	{"sync", "flushing the data store", func(*pid1) error { unix.Sync(); return nil }},
	{"unmount", "unmounting the distro's file systems", (*pid1).unmountDistro},
}

// boot runs bootPhases, showing each in /status; it stops at the first
// error.
func (in *pid1) boot() error {
	for _, p := range bootPhases {
		start := time.Now()
		in.setState(stateBooting, p.doing)
		if err := p.run(in); err != nil {
			return err
		}
		d := time.Since(start)
		in.bootMarks.Mark("boot phase " + p.name + " done")
		in.mu.Lock()
		in.phases = append(in.phases, Phase{Name: p.name, Duration: d})
		in.mu.Unlock()
		in.log.WithFields(logrus.Fields{"phase": p.name, "ms": float64(d.Microseconds()) / 1000}).Info("boot phase done")
	}
	return nil
}

// shutdown runs shutdownPhases and closes the control API last.
func (in *pid1) shutdown() {
	start := time.Now()
	for _, p := range shutdownPhases {
		in.mu.Lock()
		if in.state != stateFailed {
			in.state, in.reason = stateStopping, p.doing
		}
		in.mu.Unlock()
		if err := p.run(in); err != nil {
			in.log.WithError(err).WithField("phase", p.name).Warn("shutdown step incomplete")
		}
	}
	in.server.Close()
	// ddinit run answers the control sockets from here when another PID 1
	// follows: this one's exit can take a while yet (the namespace's
	// processes reaped).
	in.events.Encode(event{Event: "control-closed"}) // unreported only if ddinit run is gone
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
	in.settings.AddRecovered(append(in.cfg.DataStoreRecovered, ds.Recovered...)...)
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
		Keep:   cfg.PackKeep,
		Log:    in.log.WithField("component", "rootfs"),
	})
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.root = root
	in.mu.Unlock()
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
	// The stored settings win: dockerd first starts on their daemon.json.
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
	if err := bindHostRoot(hostRoot); err != nil {
		return err
	}
	in.loadComponents()
	return nil
}

// startServices starts containerd and the version pack's services, and
// tells ddinit run which sockets to expose.
func (in *pid1) startServices() error {
	defs, err := services.LoadDefinitions(services.ServicesDir)
	if err != nil {
		return fmt.Errorf("version pack %s: %w", in.cfg.VersionPack, err)
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
	// Unreported only if ddinit run is gone: PID 1 dies with it.
	in.events.Encode(event{Event: "sockets", Sockets: sockets})
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
	in.mu.Unlock()
	in.tellIdleStop()
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
	go in.guardDaemonJSON(sup, ownedDaemonKeys(defs))
	go in.awaitEngine(sup)
	return nil
}

// newSupervisor makes the supervisor of containerd and the services: at
// boot, and at each wake after an idle stop.
func (in *pid1) newSupervisor() (*services.Supervisor, error) {
	in.mu.Lock()
	defs := in.defs
	in.mu.Unlock()
	cfg := in.cfg
	return services.New(services.Config{
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
		Settings:         map[string]bool{"kubernetes": in.settings.KubernetesOn()},
		Env:              in.serviceEnv,
		Cgroups:          in.cgroups,
		Mark:             in.markEngine,
		Milestones:       map[string][]timeline.Milestone{"dockerd": DockerdMilestones},
		Spawner:          in.reaper,
		Log:              in.log.WithField("component", "supervisor"),
	}, defs)
}

// listDrives records, for /status, the Windows drives the automount root
// holds; they come in with its bind.
func (in *pid1) listDrives() error {
	if _, err := os.Stat(in.cfg.AutomountRoot); err != nil {
		in.log.WithField("automountRoot", in.cfg.AutomountRoot).Info("no automount root: no Windows drives")
		return nil
	}
	drives, err := mounts.Drives("/proc/self/mountinfo", in.cfg.AutomountRoot)
	if err != nil {
		return fmt.Errorf("list the Windows drives: %w", err)
	}
	in.setDrives(drives)
	in.log.WithField("drives", len(drives)).Info("Windows drives found")
	return nil
}

func (in *pid1) setDrives(drives []mounts.Drive) {
	var list []control.Drive
	for _, d := range drives {
		list = append(list, control.Drive{Letter: d.Letter, Path: d.Path, Inside: filepath.Join(mounts.DrivesTarget, d.Letter), FSType: d.FSType})
	}
	in.mu.Lock()
	in.drives = list
	in.mu.Unlock()
}

func (in *pid1) stopServices() error {
	// What an idle engine held is not given back under the shutdown (a
	// trim would hold the data store it unmounts).
	in.endGiveBack(true)
	// A frozen engine cannot be stopped (containerd would never answer the
	// kill): thawed first.
	in.engine.ops.Lock()
	if err := in.thaw(); err != nil {
		in.log.WithError(err).Warn("the paused engine could not be thawed for the shutdown")
	}
	in.engine.ops.Unlock()
	in.mu.Lock()
	sup := in.sup
	in.mu.Unlock()
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

package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"time"
)

// Mount is one mount the namespace makes under the assembled root, before
// the root switch: a file system of its own (proc, a tmpfs) or a bind.
type Mount struct {
	Name   string  // what it is, in errors
	Source string  // for a bind, the path in the distro
	Target string  // inside the namespace
	FSType string  // empty for a bind
	Flags  uintptr // MS_BIND|MS_REC for a bind
	Data   string
	// FromDistro marks a bind from the distro's file systems: after the
	// root switch these are the only places the namespace reaches them.
	FromDistro bool
	ReadOnly   bool
	// Slave: what the distro mounts under Source later appears inside too;
	// nothing mounted inside goes back.
	Slave bool
	// Optional: a missing source or a file system the kernel lacks is
	// skipped, not an error.
	Optional bool
	// Then fills what was mounted (device nodes in /dev): the imperative
	// steps of the plan, named by the mount they belong to.
	Then func(target string) error
}

const (
	nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	bindRec           = unix.MS_BIND | unix.MS_REC
)

// DistroBindsTarget is where the engine sees the folder of the shared
// tmpfs in which each integrated distro's proxy binds the paths its
// containers use (package distroproxy).
const DistroBindsTarget = "/run/desktop/bind-mounts"

// WSLLibTarget is where WSL's GPU user-space libraries (lib/, drivers/)
// are inside, the path GPU containers bind.
const WSLLibTarget = "/usr/lib/wsl"

// Plan is every mount the namespace makes, in order: the file systems
// every Linux userland expects, then the binds from the distro — the data
// store's folders, the Windows drives (the automount root, as a slave),
// the folder where distros bind the paths their containers use,
// WSL's GPU libraries (read-only at the same path, as GPU containers on
// WSL expect: `-v /usr/lib/wsl:/usr/lib/wsl:ro` with `--device /dev/dxg`)
// and the kernel's modules (read-only: dockerd loads netfilter modules
// with modprobe, which without them fails slowly, step by step, on every
// boot).
func Plan(ds *DataStore, automountRoot, distroBinds, wslLib string) []Mount {
	plan := []Mount{
		{Name: "proc", Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuidNodevNoexec},
		{Name: "sysfs", Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuidNodevNoexec},
		// The host's own cgroup hierarchy, bound in whole, so dockerd and
		// runc see exactly the layout (v1, hybrid or unified) the kernel has.
		{Name: "cgroups", Source: "/sys/fs/cgroup", Target: "/sys/fs/cgroup", Flags: bindRec, Optional: true},
		// A tmpfs of the namespace's own, never devtmpfs, whose one
		// instance is the whole machine's: runc setting up a service's /dev
		// (it replaces /dev/ptmx, for one) must never touch the distro's.
		{Name: "dev", Source: "dev", Target: "/dev", FSType: "tmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755,size=4m", Then: populateDev},
		{Name: "devpts", Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{Name: "shm", Source: "shm", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
		{Name: "mqueue", Source: "mqueue", Target: "/dev/mqueue", FSType: "mqueue", Flags: nosuidNodevNoexec, Optional: true},
		{Name: "run", Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
		{Name: "tmp", Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},

		{Name: "docker's data", Source: ds.Path("var/lib/docker"), Target: "/var/lib/docker", Flags: bindRec, FromDistro: true},
		{Name: "containerd's data", Source: ds.Path("var/lib/containerd"), Target: "/var/lib/containerd", Flags: bindRec, FromDistro: true},
		{Name: "kubelet's data", Source: ds.Path("var/lib/kubelet"), Target: "/var/lib/kubelet", Flags: bindRec, FromDistro: true},
		{Name: "Kubernetes' data", Source: ds.Path("var/lib/kubernetes"), Target: "/var/lib/kubernetes", Flags: bindRec, FromDistro: true},
		{Name: "docker's configuration", Source: ds.Path("etc/docker"), Target: "/etc/docker", Flags: bindRec, FromDistro: true},
		{Name: "ddinit's settings", Source: ds.Path("etc/ddinit"), Target: "/etc/ddinit", Flags: bindRec, FromDistro: true},
		{Name: "logs", Source: ds.Path("log"), Target: "/var/log/ddinit", Flags: bindRec, FromDistro: true},
		{Name: "Windows drives", Source: automountRoot, Target: DrivesTarget, Flags: bindRec, FromDistro: true, Slave: true, Optional: true},
		// A slave, so that the binds distros make there later come in;
		// read-only, so that a bind not made (yet) is never written into
		// the tmpfs, nor created there by the engine: the container fails
		// to start instead of running on an empty directory.
		{Name: "distros' binds", Source: distroBinds, Target: DistroBindsTarget, Flags: bindRec, FromDistro: true, Slave: true, ReadOnly: true, Optional: true},
		{Name: "WSL's GPU libraries", Source: wslLib, Target: WSLLibTarget, Flags: bindRec, FromDistro: true, ReadOnly: true, Optional: true},
	}
	if m := kernelModules(); m != "" {
		plan = append(plan, Mount{Name: "kernel modules", Source: m, Target: filepath.Join("/usr", m), Flags: bindRec, FromDistro: true, ReadOnly: true, Optional: true})
	}
	return plan
}

// kernelModules is where the running kernel's modules live in the distro.
func kernelModules() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
}

// Mount makes m under root, creating its mount point. It reports false,
// and does nothing, for an optional mount whose source is missing or
// whose file system the kernel lacks.
func (m Mount) Mount(root string) (bool, error) {
	bind := m.Flags&unix.MS_BIND != 0
	if bind && m.Optional {
		if _, err := os.Stat(m.Source); errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
	}
	target := filepath.Join(root, m.Target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return false, fmt.Errorf("mount %s at %s: %w", m.Name, m.Target, err)
	}
	if err := unix.Mount(m.Source, target, m.FSType, m.Flags, m.Data); err != nil {
		if m.Optional && !bind {
			return false, nil
		}
		return false, fmt.Errorf("mount %s (%s) at %s: %w", m.Name, m.Source, m.Target, err)
	}
	if m.Slave {
		if err := unix.Mount("", target, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return true, fmt.Errorf("make %s a slave: %w", m.Target, err)
		}
	}
	if m.ReadOnly {
		// A read-only bind needs a remount of its own.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return true, fmt.Errorf("make %s read-only: %w", m.Target, err)
		}
	}
	if m.Then != nil {
		if err := m.Then(target); err != nil {
			return true, fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return true, nil
}

// MountAll makes the plan under root, in order, and returns what it
// mounted, for Unmount; on an error what was mounted is returned too.
func MountAll(plan []Mount, root string) ([]Mount, error) {
	var done []Mount
	for _, m := range plan {
		made, err := m.Mount(root)
		if made {
			done = append(done, m)
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// populateDev gives the namespace's /dev the distro's device nodes (they
// follow the distro's from then on: see WatchDevices) and the usual links.
func populateDev(dev string) error {
	if err := MirrorDevices("/dev", dev); err != nil {
		return err
	}
	for link, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "core": "/proc/kcore", "ptmx": "pts/ptmx",
	} {
		if err := os.Symlink(target, filepath.Join(dev, link)); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create /dev/%s: %w", link, err)
		}
	}
	return nil
}

// Unmount takes mounts down, last first (their targets under root); a
// busy one is detached so that shutdown never hangs on it. It is the one
// unmount helper.
func Unmount(done []Mount, root string) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		if err := UnmountPath(filepath.Join(root, done[i].Target), true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UnmountPath is the one unmount of a path: nothing mounted there is
// done; a mount still busy is tried again for a moment (a process that
// used it may be exiting), then, when lazy, detached.
func UnmountPath(path string, lazy bool) error {
	for attempt := 0; ; attempt++ {
		err := unix.Unmount(path, 0)
		if err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return nil
		}
		if err == unix.EBUSY && attempt < 20 {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err == unix.EBUSY && lazy {
			if err = unix.Unmount(path, unix.MNT_DETACH); err == nil || err == unix.EINVAL {
				return nil
			}
		}
		return fmt.Errorf("unmount %s: %w", path, err)
	}
}

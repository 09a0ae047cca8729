package initd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// apiMount is one of the file systems every Linux userland expects.
type apiMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool
}

const (
	nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
)

// mountAPIFilesystems mounts proc, sys, the host's cgroup hierarchy (v1,
// hybrid or v2, whatever the host has), dev, devpts, shm, mqueue, run and
// tmp under root. It returns the mount points made, in order.
func mountAPIFilesystems(root string) ([]string, error) {
	var done []string
	mount := func(m apiMount) error {
		target := filepath.Join(root, m.target)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, target, m.fstype, m.flags, m.data); err != nil {
			if m.optional {
				return nil
			}
			return fmt.Errorf("mount %s on /%s: %w", m.fstype, m.target, err)
		}
		done = append(done, target)
		return nil
	}
	steps := []apiMount{
		{source: "proc", target: "proc", fstype: "proc", flags: nosuidNodevNoexec},
		{source: "sysfs", target: "sys", fstype: "sysfs", flags: nosuidNodevNoexec},
	}
	for _, m := range steps {
		if err := mount(m); err != nil {
			return done, err
		}
	}
	// The cgroup hierarchy: the host's own, bound in whole, so dockerd and
	// runc see exactly the layout (v1, hybrid or unified) the kernel has.
	if _, err := os.Stat("/sys/fs/cgroup"); err == nil {
		if err := mount(apiMount{source: "/sys/fs/cgroup", target: "sys/fs/cgroup", flags: unix.MS_BIND | unix.MS_REC}); err != nil {
			return done, err
		}
	}
	// /dev is a tmpfs of the namespace's own, with the usual nodes made
	// from the distro's: never devtmpfs, whose one instance is the whole
	// machine's, so that runc setting up a service's /dev (it replaces
	// /dev/ptmx, for one) can never touch the distro's.
	if err := mount(apiMount{source: "dev", target: "dev", fstype: "tmpfs", flags: unix.MS_NOSUID, data: "mode=0755,size=4m"}); err != nil {
		return done, err
	}
	if err := populateDev(filepath.Join(root, "dev")); err != nil {
		return done, err
	}
	rest := []apiMount{
		{source: "devpts", target: "dev/pts", fstype: "devpts", flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{source: "shm", target: "dev/shm", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
		{source: "mqueue", target: "dev/mqueue", fstype: "mqueue", flags: nosuidNodevNoexec, optional: true},
		{source: "tmpfs", target: "run", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=0755"},
		{source: "tmpfs", target: "tmp", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
	}
	for _, m := range rest {
		if err := mount(m); err != nil {
			return done, err
		}
	}
	return done, nil
}

// devNodes are the device nodes the namespace gets, copied (type, number,
// mode) from the distro's /dev where it has them.
var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty", "console", "kmsg", "fuse", "net/tun", "loop-control", "vsock", "vhost-vsock"}

// populateDev makes the usual device nodes and links in dev.
func populateDev(dev string) error {
	for _, name := range devNodes {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/dev", name), &st); err != nil {
			continue // the distro has no such device
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR && st.Mode&unix.S_IFMT != unix.S_IFBLK {
			continue
		}
		dst := filepath.Join(dev, name)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("create /dev/%s: %w", name, err)
		}
		unix.Chmod(dst, st.Mode&0o7777)
		unix.Chown(dst, int(st.Uid), int(st.Gid))
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

// switchRoot makes root the root of this mount namespace with pivot_root
// and detaches the distro's root, so that no path and no mount in the
// namespace leads back to it: runc can then pivot containers into their
// own roots, and a process joining the namespace (docker exec, nsenter -m)
// starts at the assembled root. The tree is already rslave (never
// rprivate: drives and /mnt/wsl mounted later must still propagate in),
// which pivot_root needs; the detach is not propagated to the distro.
// Afterwards the tree is made rshared, so that mounts the services make in
// their own mount namespaces (dockerd's layers, its network namespaces)
// reach containerd here.
func switchRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; the detach
	// below takes it off again, with everything mounted under it.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root into %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the distro's root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make the root shared: %w", err)
	}
	return nil
}

// bindHostRoot binds the whole root, recursively, at dir: the root.path
// of services that run on ddinit's own root (runc needs a root it can
// pivot into, which the current root never is).
func bindHostRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("service root %s: %w", dir, err)
	}
	if err := unix.Mount("/", dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind / at %s: %w", dir, err)
	}
	return nil
}

// loopbackUp brings lo up in this network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

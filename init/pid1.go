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
	// devtmpfs is the kernel's device list; where it cannot be mounted,
	// the host's /dev is bound instead.
	if err := mount(apiMount{source: "devtmpfs", target: "dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755", optional: true}); err != nil {
		return done, err
	}
	if len(done) == 0 || done[len(done)-1] != filepath.Join(root, "dev") {
		if err := mount(apiMount{source: "/dev", target: "dev", flags: unix.MS_BIND | unix.MS_REC}); err != nil {
			return done, err
		}
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
	// /dev/ptmx must reach our devpts instance, not the host's.
	ptmx := filepath.Join(root, "dev/ptmx")
	if _, err := os.Lstat(ptmx); errors.Is(err, os.ErrNotExist) {
		os.WriteFile(ptmx, nil, 0o666)
	}
	if err := unix.Mount(filepath.Join(root, "dev/pts/ptmx"), ptmx, "", unix.MS_BIND, ""); err == nil {
		done = append(done, ptmx)
	}
	return done, nil
}

// mountFrame puts a private tmpfs at dir for the root filesystem's
// mounts and makes it a shared mount. Shared matters: the root is
// entered with chroot, so the mount it sits on is its parent, and
// pivot_root refuses to run under a shared parent. dockerd tries
// pivot_root whenever it unpacks an image layer and, refused, falls back
// to chroot; let through, its pivot fails to clean up on some kernels'
// stacked root mounts and the layer is lost.
func mountFrame(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("run directory %s: %w", dir, err)
	}
	if err := unix.Mount("ddinit", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// switchRoot makes root the root directory of PID 1 with chroot. The
// distro's mounts stay in this mount namespace, out of reach of every path
// under the new root; see mountFrame for why this is not pivot_root.
func switchRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into %s: %w", root, err)
	}
	return unix.Chdir("/")
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

package pid1

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

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

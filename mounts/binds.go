package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DistroBind is one place where the namespace reaches a file system of
// the distro. After the root switch these are the only ones: everything
// else the namespace sees is the assembled root or a file system of its
// own (proc, sysfs, tmpfs, devpts, the cgroup hierarchy).
type DistroBind struct {
	Source   string `json:"source"` // in the distro
	Target   string `json:"target"` // inside the namespace
	ReadOnly bool   `json:"readOnly,omitempty"`
	// Slave: what the distro mounts under Source later (a drive WSL
	// attaches) appears inside too; nothing mounted inside goes back.
	Slave bool `json:"slave,omitempty"`
	// Optional: a Source the distro lacks is skipped, not an error.
	Optional bool `json:"-"`
}

// KernelModules is where the running kernel's modules live in the distro.
func KernelModules() string {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ""
	}
	return filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
}

// DistroBinds is the whole list of binds from the distro into the
// namespace: the data store's folders, the Windows drives (the automount
// root, as a slave) and the kernel's modules (read-only: dockerd loads
// netfilter modules with modprobe, which without them fails slowly, step
// by step, on every boot).
func (d *DataStore) DistroBinds(automountRoot string) []DistroBind {
	binds := []DistroBind{
		{Source: d.Path("var/lib/docker"), Target: "/var/lib/docker"},
		{Source: d.Path("var/lib/containerd"), Target: "/var/lib/containerd"},
		{Source: d.Path("var/lib/kubelet"), Target: "/var/lib/kubelet"},
		{Source: d.Path("etc/docker"), Target: "/etc/docker"},
		{Source: d.Path("log"), Target: "/var/log/ddinit"},
		{Source: automountRoot, Target: DrivesTarget, Slave: true, Optional: true},
	}
	if m := KernelModules(); m != "" {
		binds = append(binds, DistroBind{Source: m, Target: filepath.Join("/usr", m), ReadOnly: true, Optional: true})
	}
	return binds
}

// Mount makes the bind under root, creating its mount point. It reports
// false, and does nothing, for an optional bind whose source is missing.
func (b DistroBind) Mount(root string) (bool, error) {
	if _, err := os.Stat(b.Source); errors.Is(err, os.ErrNotExist) && b.Optional {
		return false, nil
	}
	target := filepath.Join(root, b.Target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return false, fmt.Errorf("bind %s: %w", b.Target, err)
	}
	if err := unix.Mount(b.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return false, fmt.Errorf("bind %s at %s: %w", b.Source, b.Target, err)
	}
	if b.Slave {
		if err := unix.Mount("", target, "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
			return true, fmt.Errorf("make %s a slave: %w", b.Target, err)
		}
	}
	if b.ReadOnly {
		// A read-only bind needs a remount of its own.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return true, fmt.Errorf("make %s read-only: %w", b.Target, err)
		}
	}
	return true, nil
}

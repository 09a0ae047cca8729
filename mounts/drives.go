package mounts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// DrivesTarget is where the Windows drives appear inside the namespace:
// C: is /run/desktop/mnt/host/c, as docker run -v paths name it.
const DrivesTarget = "/run/desktop/mnt/host"

// Drive is a Windows drive mounted by WSL under the automount root.
type Drive struct {
	Letter  string `json:"letter"`
	Path    string `json:"path"`   // where the distro has it
	FSType  string `json:"fsType"` // 9p (aname=drvfs) or virtiofs on WSL
	MountID string `json:"mountId"`
}

// Drives lists the mount points directly under root named by a single
// letter, from the mount table given (normally /proc/self/mountinfo).
func Drives(mountinfo, root string) ([]Drive, error) {
	table, err := ReadMountinfo(mountinfo)
	if err != nil {
		return nil, err
	}
	root = filepath.Clean(root)
	seen := map[string]Drive{}
	for _, m := range table {
		if filepath.Dir(m.Point) != root {
			continue
		}
		letter := filepath.Base(m.Point)
		if len(letter) != 1 || letter[0] < 'a' || letter[0] > 'z' {
			continue
		}
		seen[letter] = Drive{Letter: letter, Path: m.Point, FSType: m.FSType, MountID: m.ID} // the last mount on a point wins
	}
	var out []Drive
	for _, d := range seen {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Letter < out[j].Letter })
	return out, nil
}

// WatchDrives calls changed with the drives under root whenever they
// change (a drive mounted or unmounted in the distro), until ctx ends.
// The kernel reports every change of this mount namespace's table by
// poll(2) on its mountinfo; no polling interval delays a drive.
func WatchDrives(ctx context.Context, root string, initial []Drive, changed func([]Drive)) error {
	// A raw descriptor: one os.Open registers with Go's netpoller, whose
	// epoll would consume the change events before poll sees them.
	fd, err := unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("watch the mount table: %w", err)
	}
	defer unix.Close(fd)
	last := initial
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, int((250 * time.Millisecond).Milliseconds()))
		if err == unix.EINTR || n == 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("watch the mount table: %w", err)
		}
		drives, err := Drives("/proc/self/mountinfo", root)
		if err != nil {
			continue
		}
		if !slices.Equal(drives, last) {
			last = drives
			changed(drives)
		}
	}
	return nil
}

// CloneDrive returns a detached copy of the mount tree at path, which a
// process in another mount namespace can attach with AttachDrive: how a
// drive reaches the namespace when the automount root does not propagate
// mounts (WSL's root is not a shared mount).
func CloneDrive(path string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("clone the mount at %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// AttachDrive attaches a tree from CloneDrive at DrivesTarget/<letter>,
// unless a mount is there already (an automount root that is shared
// brings drives in by itself). It reports whether it attached.
func AttachDrive(tree *os.File, letter string) (bool, error) {
	target := filepath.Join(DrivesTarget, letter)
	table, err := ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(table, func(m MountInfo) bool { return m.Point == target }) {
		return false, nil
	}
	if err := unix.MoveMount(int(tree.Fd()), "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return false, fmt.Errorf("attach drive %s at %s: %w", letter, target, err)
	}
	return true, nil
}

// DetachDrive takes down a drive AttachDrive attached. The namespace's
// mounts are slaves of the distro's: nothing goes back.
func DetachDrive(letter string) error {
	target := filepath.Join(DrivesTarget, letter)
	if err := UnmountPath(target, true); err != nil {
		return fmt.Errorf("detach drive %s: %w", letter, err)
	}
	return nil
}

// SpaceLeft measures the free space of dir's file system.
func SpaceLeft(dir string) (free uint64, err error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}

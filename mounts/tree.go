package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is a folder held open (O_PATH). Paths below it are resolved beneath
// it and never through a symlink: a symlink planted in a folder other
// distros can write (the shared tmpfs) cannot redirect a mount or an
// unmount made there.
type Dir struct {
	fd   int
	path string
}

// OpenDir holds path, which the caller trusts (its own configuration).
func OpenDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Dir{fd: fd, path: path}, nil
}

// Close lets the folder go.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Path is the folder's path, for messages.
func (d *Dir) Path() string { return d.path }

// openBeneath opens rel beneath the folder fd: never above it, never
// through a symlink (ELOOP names a symlink in the way).
func openBeneath(fd int, rel string, flags uint64, mode uint64) (int, error) {
	return unix.Openat2(fd, rel, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Mode:    mode,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

func pathError(op, path string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s %s: a symlink is in the way (refused: it could redirect the mount): %w", op, path, err)
	}
	return fmt.Errorf("%s %s: %w", op, path, err)
}

// Sub holds the folder name below d, made (mode 0755) when missing. name
// is one path component.
func (d *Dir) Sub(name string) (*Dir, error) {
	path := filepath.Join(d.path, name)
	if err := oneComponent(name); err != nil {
		return nil, fmt.Errorf("folder under %s: %w", d.path, err)
	}
	if err := unix.Mkdirat(d.fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, pathError("make", path, err)
	}
	fd, err := openBeneath(d.fd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, pathError("open", path, err)
	}
	return &Dir{fd: fd, path: path}, nil
}

// OpenFolder holds folder (slash-separated, below shared, each component
// made when missing), each component opened beneath the one above it
// without following a symlink: shared is trusted (the caller's
// configuration), what is below it may be anyone's.
func OpenFolder(shared, folder string) (*Dir, error) {
	d, err := OpenDir(shared)
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(folder, "/") {
		sub, err := d.Sub(name)
		d.Close()
		if err != nil {
			return nil, err
		}
		d = sub
	}
	return d, nil
}

// mountID is the mount an open file is on.
func mountID(fd int) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, err
	}
	return st.Mnt_id, nil
}

// MountedAt reports whether a mount's root is at name in d.
func (d *Dir) MountedAt(name string) bool {
	fd, err := openBeneath(d.fd, name, unix.O_PATH, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return d.isMountRoot(fd)
}

func (d *Dir) isMountRoot(fd int) bool {
	inner, err1 := mountID(fd)
	outer, err2 := mountID(d.fd)
	return err1 == nil && err2 == nil && inner != outer
}

// cloneOne clones the mount at path (one mount, not its submounts) as a
// detached, private tree: nothing that happens at the source propagates
// into the copy, and the copy joins no peer group of the source's.
func cloneOne(path string) (int, error) {
	// An absolute path, resolved from / with no symlink on the way: the
	// caller decided on this path, and a symlink swapped in since must
	// not send the clone elsewhere.
	src, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return -1, pathError("open", path, err)
	}
	defer unix.Close(src)
	tree, err := unix.OpenTree(src, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return -1, fmt.Errorf("clone the mount at %s: %w", path, err)
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Propagation: unix.MS_PRIVATE}); err != nil {
		unix.Close(tree)
		return -1, fmt.Errorf("make the clone of %s private: %w", path, err)
	}
	return tree, nil
}

// BindTree binds source onto the point name below d (made as a folder or
// an empty file, as source is): source's own mount first, then each mount
// below source in table (the binding namespace's mountinfo, by point,
// parents first) that is not at or below one of skip. Each is cloned on
// its own and private: a mount is never copied twice, and nothing of the
// source's propagation comes along. A submount that cannot be cloned (it
// went away, or is unbindable) is left out and reported in skipped; an
// error leaves nothing mounted.
func (d *Dir) BindTree(source, name string, table []MountInfo, skip []string) (made int, skipped []error, err error) {
	point := filepath.Join(d.path, name)
	st, err := os.Stat(source)
	if err != nil {
		return 0, nil, fmt.Errorf("bind source %s: %w", source, err)
	}
	// The point made here is removed again if the bind fails: an empty
	// folder at an engine path would let a container start on nothing.
	removeFlag := -1
	if st.IsDir() {
		err := unix.Mkdirat(d.fd, name, 0o755)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, nil, pathError("make the bind point", point, err)
		}
		if err == nil {
			removeFlag = unix.AT_REMOVEDIR
		}
	} else {
		fd, err := openBeneath(d.fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err == nil {
			unix.Close(fd)
			removeFlag = 0
		} else if !errors.Is(err, unix.EEXIST) {
			return 0, nil, pathError("make the bind point", point, err)
		}
	}
	defer func() {
		if err != nil && removeFlag >= 0 {
			unix.Unlinkat(d.fd, name, removeFlag) // only what this call made, and only if nothing got mounted
		}
	}()
	target, err := openBeneath(d.fd, name, unix.O_PATH, 0)
	if err != nil {
		return 0, nil, pathError("open the bind point", point, err)
	}
	defer unix.Close(target)
	if d.isMountRoot(target) {
		err = fmt.Errorf("bind point %s: something is mounted there already", point)
		return 0, nil, err
	}
	tree, err := cloneOne(source)
	if err != nil {
		return 0, nil, err
	}
	err = unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	unix.Close(tree)
	if err != nil {
		err = fmt.Errorf("bind %s at %s: %w", source, point, err)
		return 0, nil, err
	}
	made = 1
	root, rerr := openBeneath(d.fd, name, unix.O_PATH, 0)
	if rerr != nil {
		d.Unbind(name)
		return 0, nil, pathError("open the bind", point, rerr)
	}
	defer unix.Close(root)
	for _, rel := range submounts(source, table, skip) {
		if err := attachBelow(root, filepath.Join(source, rel), rel); err != nil {
			skipped = append(skipped, err)
			continue
		}
		made++
	}
	return made, skipped, nil
}

// submounts lists the points of the mounts below source in table, as
// paths relative to it, parents before children, each once (of mounts
// stacked at one point, binding the point gives the top one), leaving out
// every view of what skip names and all that is below one: the mounts at
// or below each skip path, and any mount of the same file system as the
// mount at a skip path (the shared tmpfs bound somewhere else too).
func submounts(source string, table []MountInfo, skip []string) []string {
	devs := map[string]bool{}
	for _, m := range table {
		if slices.Contains(skip, m.Point) {
			devs[m.Dev] = true
		}
	}
	var out []string
	for _, m := range table {
		if devs[m.Dev] || slices.ContainsFunc(skip, func(s string) bool { return Within(m.Point, s) }) {
			out = append(out, m.Point)
		}
	}
	var rels []string
	for _, m := range table {
		rel, err := filepath.Rel(source, m.Point)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		if slices.ContainsFunc(out, func(o string) bool { return Within(m.Point, o) }) {
			continue
		}
		if !slices.Contains(rels, rel) {
			rels = append(rels, rel)
		}
	}
	slices.SortStableFunc(rels, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	return rels
}

// MountOf is the mount path is on: the last in table (the top of a
// stack) whose point is path or a folder above it.
func MountOf(table []MountInfo, path string) (MountInfo, bool) {
	var best MountInfo
	found := false
	for _, m := range table {
		if Within(path, m.Point) && (!found || len(m.Point) >= len(best.Point)) {
			best, found = m, true
		}
	}
	return best, found
}

// Within reports whether path is dir or below it (both clean, absolute).
func Within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// attachBelow clones the mount at path and attaches it at rel beneath
// root, resolved without leaving root or following a symlink.
func attachBelow(root int, path, rel string) error {
	tree, err := cloneOne(path)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	at, err := openBeneath(root, rel, unix.O_PATH, 0)
	if err != nil {
		return pathError("open the point of the submount", rel, err)
	}
	defer unix.Close(at)
	if err := unix.MoveMount(tree, "", at, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the submount %s: %w", path, err)
	}
	return nil
}

// Unbind detaches the mount whose root is at name below d, with whatever
// is mounted below it, and removes the point. The point is resolved
// beneath d without following a symlink, and only a mount's root is
// unmounted: a symlink planted there cannot turn it into an unmount of
// anything else.
func (d *Dir) Unbind(name string) error {
	point := filepath.Join(d.path, name)
	fd, err := openBeneath(d.fd, name, unix.O_PATH, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return pathError("open the bind point", point, err)
	}
	// Mounts stacked there (two proxies racing) come off one by one.
	for tries := 0; d.isMountRoot(fd); tries++ {
		if tries == 8 {
			unix.Close(fd)
			return fmt.Errorf("take down the bind at %s: mounts are still there", point)
		}
		uerr := unix.Unmount("/proc/self/fd/"+strconv.Itoa(fd), unix.MNT_DETACH)
		unix.Close(fd)
		if uerr != nil {
			return fmt.Errorf("take down the bind at %s: %w", point, uerr)
		}
		if fd, err = openBeneath(d.fd, name, unix.O_PATH, 0); errors.Is(err, unix.ENOENT) {
			return nil
		} else if err != nil {
			return pathError("open the bind point", point, err)
		}
	}
	unix.Close(fd)
	if err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err != nil {
		unix.Unlinkat(d.fd, name, 0) // a file's point; gone or busy is harmless: nothing is mounted
	}
	return nil
}

package mounts

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ddinit/ddinit/regularfile"
)

// What ddinit puts in a folder other distros can write besides binds: a
// read-only bind of a tree of its own, a link switched by one rename, a
// file replaced whole. Every name is one path component below d, made and
// replaced beneath it, never through a symlink.

// BindReadOnly binds source (a folder ddinit trusts: its own cache), alone
// and private, read-only, nosuid and nodev, onto the folder name below d,
// made when missing. Under a shared parent the bind reaches its peers
// (every distro); nothing mounted below source comes along. An error
// leaves nothing mounted.
func (d *Dir) BindReadOnly(source, name string) error {
	point := filepath.Join(d.path, name)
	if err := oneComponent(name); err != nil {
		return fmt.Errorf("bind point %s: %w", point, err)
	}
	made := false
	if err := unix.Mkdirat(d.fd, name, 0o755); err == nil {
		made = true
	} else if !errors.Is(err, unix.EEXIST) {
		return pathError("make the bind point", point, err)
	}
	fail := func(err error) error {
		if made {
			unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR)
		}
		return err
	}
	target, err := openBeneath(d.fd, name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fail(pathError("open the bind point", point, err))
	}
	defer unix.Close(target)
	if d.isMountRoot(target) {
		return fail(fmt.Errorf("bind point %s: something is mounted there already", point))
	}
	tree, err := cloneOne(source)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fail(fmt.Errorf("make the bind of %s read-only: %w", source, err))
	}
	if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fail(fmt.Errorf("bind %s at %s: %w", source, point, err))
	}
	return nil
}

// Link makes name below d a symlink to target, replacing what is there in
// one rename: a reader sees the old link or the new one, never none.
func (d *Dir) Link(target, name string) error {
	if err := oneComponent(name); err != nil {
		return fmt.Errorf("link %s: %w", filepath.Join(d.path, name), err)
	}
	tmp, err := tempName(name)
	if err != nil {
		return err
	}
	if err := unix.Symlinkat(target, d.fd, tmp); err != nil {
		return pathError("make the link", filepath.Join(d.path, tmp), err)
	}
	if err := unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return pathError("put the link in place", filepath.Join(d.path, name), err)
	}
	return nil
}

// WriteFile replaces the file name below d with data (mode 0644) in one
// rename.
func (d *Dir) WriteFile(name string, data []byte) error {
	return d.WriteFileOwned(name, data, 0o644, -1)
}

// WriteFileOwned replaces the file name below d with data in one rename,
// with mode and the group gid (-1: the writer's). The temporary file has
// its mode and group before a byte is written: at no moment can anyone
// the final ones leave out read the data. A symlink at name is replaced,
// never followed.
func (d *Dir) WriteFileOwned(name string, data []byte, mode os.FileMode, gid int) error {
	path := filepath.Join(d.path, name)
	if err := oneComponent(name); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := tempName(name)
	if err != nil {
		return err
	}
	fd, err := openBeneath(d.fd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600)
	if err != nil {
		return pathError("write", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var werr error
	if gid >= 0 {
		werr = f.Chown(-1, gid)
	}
	if werr == nil {
		// Set, not left to the umask.
		werr = f.Chmod(mode)
	}
	if werr == nil {
		_, werr = f.Write(data)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if werr != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

// Remove removes the file or link name below d (not a folder); gone
// already is no error.
func (d *Dir) Remove(name string) error {
	if err := oneComponent(name); err != nil {
		return fmt.Errorf("remove %s: %w", filepath.Join(d.path, name), err)
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return pathError("remove", filepath.Join(d.path, name), err)
	}
	return nil
}

// ReadFile returns the content of the regular file name below d, opened
// beneath d without following a symlink and without blocking (a FIFO is
// refused, not waited on), when it holds at most limit bytes.
func (d *Dir) ReadFile(name string, limit int64) ([]byte, error) {
	if err := oneComponent(name); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(d.path, name), err)
	}
	return d.ReadPath(name, limit)
}

// ReadPath is ReadFile for rel, a relative path of one or more components
// below d (a file another program offers in a folder of its own), each
// resolved beneath d and none through a symlink. A missing file's error
// is fs.ErrNotExist.
func (d *Dir) ReadPath(rel string, limit int64) ([]byte, error) {
	path := filepath.Join(d.path, rel)
	if rel == "" || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("read %s: %q is not a relative path", path, rel)
	}
	fd, err := openBeneath(d.fd, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, pathError("read", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, pathError("read", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: it is %s, not a regular file", path, regularfile.Kind(st.Mode))
	}
	if st.Size > limit {
		return nil, fmt.Errorf("read %s: %d bytes, more than the %d it may hold", path, st.Size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: more than the %d bytes it may hold", path, limit)
	}
	return b, nil
}

// Names lists the entries of d.
func (d *Dir) Names() ([]string, error) {
	fd, err := openBeneath(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, pathError("read", d.path, err)
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// IsTemp reports a name Link or WriteFile uses on its way (left by a
// crash between its two steps).
func IsTemp(name string) bool { return strings.HasPrefix(name, ".tmp-") }

func tempName(name string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return ".tmp-" + hex.EncodeToString(b[:]) + "-" + name, nil
}

func oneComponent(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%q is not one path component", name)
	}
	return nil
}

package kubeconfig

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ddinit/ddinit/regularfile"
	"golang.org/x/sys/unix"
)

// Edit is a change to a kubeconfig's content (nil when there is none
// yet): the new content, and whether it differs.
type Edit func(old []byte) ([]byte, bool, error)

// Result is what Update found and did.
type Result struct {
	// File is the kubeconfig as the distro names it: ~/.kube/config, or
	// the file a link there leads to.
	File string
	// Wrote: the edit changed it, and it was written. Created: there was
	// none; it was made.
	Wrote, Created bool
}

// Update applies edit to u's ~/.kube/config in the distro whose root is
// root. It acts as u (the file system's view of the user, on a thread of
// its own: the proxy runs as root, and a user's home is theirs), so a
// link of theirs can lead only where they may write anyway; and it
// refuses what a user did not mean ddinit to write through:
//
//   - ~/.kube as a symlink: refused (never followed), as is a ~/.kube or
//     a file that is not the user's (a root-owned one, made by `sudo
//     kubectl`, keeps its owner: it is left alone);
//   - ~/.kube/config as a symlink (to the Windows kubeconfig, a dotfiles
//     repository): written through when it leads to a regular file of
//     the user's, replaced in its own folder; else left alone;
//   - anything but a regular file there (a FIFO, a folder): left alone.
//
// With create, a missing ~/.kube (0700) and file (0600) are made, the
// user's; without, a user without them is left so. The file is replaced
// in one rename of a synced temporary file in its folder, the folder
// synced, keeping its mode and group, under kubectl's own lock
// (config.lock beside the file's name, as client-go takes it): with the
// lock held the file is read and edited again, so a kubectl that wrote
// it meanwhile loses nothing. A lock already there (kubectl writing, or
// one it left) defers the edit.
func Update(root string, u User, create bool, edit Edit) (Result, error) {
	var r Result
	err := asUser(u, func() error {
		var err error
		r, err = update(root, u, create, edit)
		return err
	})
	return r, err
}

func update(root string, u User, create bool, edit Edit) (Result, error) {
	kubeDir := filepath.Join(u.Home, ".kube")
	r := Result{File: filepath.Join(kubeDir, "config")}
	home, err := unix.Open(filepath.Join(root, u.Home), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return r, fmt.Errorf("%s's home %s: %w", u.Name, u.Home, err)
	}
	defer unix.Close(home)
	kube, err := beneath(home, ".kube", unix.O_RDONLY|unix.O_DIRECTORY)
	made := false
	if errors.Is(err, unix.ENOENT) && create {
		if err := unix.Mkdirat(home, ".kube", 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return r, fmt.Errorf("make %s: %w", kubeDir, err)
		}
		made = true
		kube, err = beneath(home, ".kube", unix.O_RDONLY|unix.O_DIRECTORY)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return r, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return r, fmt.Errorf("%s is a symlink: refused, never followed", kubeDir)
	case errors.Is(err, unix.ENOTDIR):
		return r, fmt.Errorf("%s is not a folder: left alone", kubeDir)
	case err != nil:
		return r, fmt.Errorf("open %s: %w", kubeDir, err)
	}
	defer unix.Close(kube)
	if err := owned(kube, u, kubeDir); err != nil {
		return r, err
	}
	if made {
		unix.Fchmod(kube, 0o700) // whatever the umask
	}

	locked := false
	defer func() {
		if locked {
			unix.Unlinkat(kube, lockName, 0)
		}
	}()
	for {
		t, err := locate(root, kube, kubeDir, u, create)
		if t != nil {
			r.File = t.path
			defer t.close()
		}
		if err != nil || t == nil {
			return r, err
		}
		out, changed, err := edit(t.content)
		if err != nil {
			return r, fmt.Errorf("%s: %w", t.path, err)
		}
		if !changed {
			return r, nil
		}
		if locked {
			if err := t.replace(out); err != nil {
				return r, err
			}
			r.Wrote, r.Created = true, !t.exists
			return r, nil
		}
		fd, err := unix.Openat(kube, lockName, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			return r, fmt.Errorf("%s is locked (%s: kubectl is writing it, or left its lock): not edited for now", r.File, filepath.Join(kubeDir, lockName))
		}
		if err != nil {
			return r, fmt.Errorf("lock %s: %w", r.File, err)
		}
		unix.Close(fd)
		locked = true
		t.close()
	}
}

// lockName is client-go's lock of ~/.kube/config.
const lockName = "config.lock"

// beneath opens name in the folder dir, never through a symlink.
func beneath(dir int, name string, flags uint64) (int, error) {
	return unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// owned checks the open file fd is u's.
func owned(fd int, u User, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if int(st.Uid) != u.UID {
		return fmt.Errorf("%s belongs to uid %d, not %s (uid %d): left alone", path, st.Uid, u.Name, u.UID)
	}
	return nil
}

// target is the kubeconfig to edit, as found.
type target struct {
	dir     int    // the folder it is replaced in
	name    string // its name there
	path    string // as the distro names it
	exists  bool
	mode    uint32
	gid     uint32
	content []byte
}

func (t *target) close() {
	if t.dir >= 0 {
		unix.Close(t.dir)
		t.dir = -1
	}
}

// locate finds the kubeconfig in the ~/.kube held by kube: nil when
// there is none and create is not set.
func locate(root string, kube int, kubeDir string, u User, create bool) (*target, error) {
	path := filepath.Join(kubeDir, "config")
	fd, err := beneath(kube, "config", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return throughLink(root, kubeDir, u)
	}
	if errors.Is(err, unix.ENOENT) {
		if !create {
			return nil, nil
		}
		dir, err := unix.Dup(kube)
		if err != nil {
			return nil, err
		}
		return &target{dir: dir, name: "config", path: path}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	dir, err := unix.Dup(kube)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	t := &target{dir: dir, name: "config", path: path, exists: true}
	if err := t.read(fd, u); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// throughLink is the file ~/.kube/config links to, when it is a regular
// file of the user's. It is resolved as the kernel resolves it for the
// user's kubectl (the thread acts as the user: it reaches nothing they
// could not).
func throughLink(root, kubeDir string, u User) (*target, error) {
	link := filepath.Join(kubeDir, "config")
	real, err := filepath.EvalSymlinks(filepath.Join(root, link))
	if err != nil {
		return nil, fmt.Errorf("%s is a link that leads nowhere (%w): left alone", link, err)
	}
	path := distroPath(root, real)
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s, which %s links to: %w", path, link, err)
	}
	dir, err := unix.Open(filepath.Dir(real), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("the folder of %s, which %s links to: %w", path, link, err)
	}
	t := &target{dir: dir, name: filepath.Base(real), path: path, exists: true}
	if err := t.read(fd, u); err != nil {
		t.close()
		return nil, fmt.Errorf("%s links to it: %w", link, err)
	}
	return t, nil
}

// read takes fd (closing it): a regular file of u's, bounded.
func (t *target) read(fd int, u User) error {
	f := os.NewFile(uintptr(fd), t.path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", t.path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is %s, not a regular file: left alone", t.path, regularfile.Kind(st.Mode))
	}
	if int(st.Uid) != u.UID {
		return fmt.Errorf("%s belongs to uid %d, not %s (uid %d): left alone", t.path, st.Uid, u.Name, u.UID)
	}
	if st.Size > MaxConfigBytes {
		return fmt.Errorf("%s: %d bytes, more than the %d ddinit reads: left alone", t.path, st.Size, MaxConfigBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", t.path, err)
	}
	if len(b) > MaxConfigBytes {
		return fmt.Errorf("%s grew past the %d bytes ddinit reads: left alone", t.path, MaxConfigBytes)
	}
	t.content, t.mode, t.gid = b, st.Mode&0o777, st.Gid
	return nil
}

// replace puts b in place of the file in one rename: a crash leaves the
// old content or the new, never half of one (package atomicfile's way,
// here on a folder held open rather than a path).
func (t *target) replace(b []byte) error {
	var suffix [6]byte
	rand.Read(suffix[:])
	tmp := "." + t.name + ".ddinit-" + hex.EncodeToString(suffix[:])
	fd, err := unix.Openat(t.dir, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", t.path, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = func() error {
		defer f.Close()
		if _, err := f.Write(b); err != nil {
			return err
		}
		mode := uint32(0o600)
		if t.exists {
			mode = t.mode
		}
		if err := f.Chmod(os.FileMode(mode)); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if t.exists && st.Gid != t.gid {
			if err := f.Chown(-1, int(t.gid)); err != nil {
				return fmt.Errorf("keep its group %d: %w", t.gid, err)
			}
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}()
	if err == nil {
		err = unix.Renameat(t.dir, tmp, t.dir, t.name)
	}
	if err != nil {
		unix.Unlinkat(t.dir, tmp, 0)
		return fmt.Errorf("write %s: %w", t.path, err)
	}
	// The rename is durable with the folder synced; without it, it is
	// still atomic.
	unix.Fsync(t.dir)
	return nil
}

// distroPath is p, a path on this machine, as the distro names it.
func distroPath(root, p string) string {
	if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return filepath.Join("/", rel)
	}
	return p
}

// asUser runs f with the file system's view of u: as u when the proxy
// already is u, else (as root) on a thread of its own whose file system
// ids and groups are u's — what f opens, makes and renames is checked
// and owned as u's own would be, and root's capabilities over files are
// gone from that thread.
func asUser(u User, f func() error) error {
	switch euid := os.Geteuid(); {
	case euid == u.UID:
		return f()
	case euid != 0:
		return fmt.Errorf("ddinit runs as uid %d: it cannot act as %s (uid %d)", euid, u.Name, u.UID)
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine ends with the thread locked, and
		// the runtime ends the thread, its ids changed, with it. No other
		// goroutine runs on it meanwhile, and none is started from it.
		runtime.LockOSThread()
		if err := becomeUser(u); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

// becomeUser gives this thread u's file system ids and groups. Each call
// is the system call itself, which changes the calling thread alone (Go's
// and libc's setgroups change every thread).
func becomeUser(u User) error {
	groups := []uint32{uint32(u.GID)}
	for _, g := range u.Groups {
		groups = append(groups, uint32(g))
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
		return fmt.Errorf("take %s's groups: %w", u.Name, e)
	}
	unix.Setfsgid(u.GID)
	unix.Setfsuid(u.UID)
	// setfsuid(2) reports no failure but the ids it leaves: read back.
	uid, _ := unix.SetfsuidRetUid(-1)
	gid, _ := unix.SetfsgidRetGid(-1)
	if uid != u.UID || gid != u.GID {
		return fmt.Errorf("act as %s: the thread's file system ids are %d:%d, not %d:%d", u.Name, uid, gid, u.UID, u.GID)
	}
	return nil
}

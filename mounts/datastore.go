package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/ddinit/ddinit/settings"
	"golang.org/x/sys/unix"
)

// Layout is what the data store holds, relative to its root.
var Layout = []string{"var/lib/docker", "var/lib/containerd", "var/lib/kubelet", "var/lib/kubernetes", "etc/docker", "etc/ddinit", "log", "isocache", "cli-tools"}

// replaceable are the layout folders a boot may set aside when they are
// not folders, and what a new, empty one means: they hold only ddinit's
// and dockerd's configuration, records, logs and a cache, all of which a
// boot can do without (the frontend pushes its settings again). The rest
// (var/lib/*) holds the engine's images, containers and volumes: ddinit
// never moves them.
var replaceable = map[string]string{
	"etc/docker": "a new, empty etc/docker: the version pack's daemon.json",
	"etc/ddinit": "a new, empty etc/ddinit: no settings document, the config's version pack, no record of the engine that last ran",
	"log":        "a new, empty log folder",
	"isocache":   "a new, empty image cache: the images are verified and copied in again",
	"cli-tools":  "a new, empty CLI tools cache: the image is verified and copied in again",
}

// Free-space thresholds: under LowSpaceBytes the data store is reported as
// nearly full; under FullBytes it is full and the engine unhealthy (image
// pulls and container writes would fail).
const (
	LowSpaceBytes = 1 << 30
	FullBytes     = 64 << 20
)

// DataStore is the data distro's root as ddinit uses it.
type DataStore struct {
	Dir       string
	FreeBytes uint64
	LowSpace  bool
	// Recovered are the layout entries that were not folders and were
	// set aside for new ones, for the boot to report.
	Recovered []settings.Recovery
}

// OpenDataStore checks that dir exists, is a directory and is writable,
// creates its layout and measures its free space. A layout entry (or a
// folder above one) that exists but is not a folder is set aside for a
// new one when it holds only configuration (replaceable; ds.Recovered
// says so), else an error naming it, what it is and what to do.
func OpenDataStore(dir string) (*DataStore, error) {
	if err := checkStoreDir(dir); err != nil {
		return nil, err
	}
	ds := &DataStore{Dir: dir}
	for _, d := range Layout {
		if err := ds.makeLayoutDir(d, time.Now()); err != nil {
			return nil, err
		}
	}
	if free, err := SpaceLeft(dir); err == nil {
		ds.FreeBytes = free
		ds.LowSpace = free < LowSpaceBytes
	}
	return ds, nil
}

// Path joins a layout entry to the store's root.
func (d *DataStore) Path(rel string) string { return filepath.Join(d.Dir, rel) }

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// LockExclusive takes an exclusive lock on the file at path (created when
// missing) without waiting: what keeps a second ddinit off a data store or
// an image cache. The lock lasts until the file is closed; what names the
// locked thing in the error.
func LockExclusive(path, what string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("%s is in use by another ddinit (it holds %s)", what, path)
		}
		return nil, fmt.Errorf("lock %s: %w", what, err)
	}
	return f, nil
}

// fitrim is FITRIM, _IOWR('X', 121, struct fstrim_range).
const fitrim = 0xC0185879

// Trim tells the file system holding dir to discard its free blocks
// (FITRIM), so that a thin data disk (a VHDX, a sparse file) gives them
// back to the machine; it returns how many bytes the file system
// reported trimmed. A file system or device without discard says so
// (EOPNOTSUPP).
func Trim(dir string) (uint64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("trim %s: %w", dir, err)
	}
	defer f.Close()
	// Blocks freed by a removal count as free only once the journal has
	// committed it: without this a trim right after misses them.
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return 0, fmt.Errorf("sync %s before the trim: %w", dir, err)
	}
	r := struct{ start, len, minlen uint64 }{0, ^uint64(0), 0}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fitrim, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return 0, fmt.Errorf("trim %s: %w", dir, errno)
	}
	return r.len, nil
}

// checkStoreDir says why dir cannot be a data store: missing, not a
// directory, or not writable.
func checkStoreDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data store %s does not exist: is the docker-desktop-data distro running? (--data-dir names it)", dir)
	}
	if err != nil {
		return fmt.Errorf("data store %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("data store %s is %s, not a directory", dir, describe(dir))
	}
	probe, err := os.CreateTemp(dir, ".ddinit-write-check-")
	if err != nil {
		return fmt.Errorf("data store %s is not writable: %w", dir, unwrapPathError(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// LockDataStore takes the data store's lock (one ddinit per store), before
// anything of it is read or changed; it holds until the file returned is
// closed.
func LockDataStore(dir string) (*os.File, error) {
	if err := checkStoreDir(dir); err != nil {
		return nil, err
	}
	return LockExclusive(filepath.Join(dir, ".ddinit.lock"), "data store "+dir)
}

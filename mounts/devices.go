package mounts

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// notMirrored are the parts of the distro's /dev the namespace has its
// own of: its devpts instance (and ptmx, a link into it), shm, mqueue.
var notMirrored = map[string]bool{"pts": true, "ptmx": true, "shm": true, "mqueue": true, "hugepages": true}

func mirrored(rel string) bool {
	return !notMirrored[strings.SplitN(rel, "/", 2)[0]]
}

// MirrorDevices makes, under dst, every character and block device node
// of src (the distro's /dev), with its numbers, mode and owner, except
// those in notMirrored.
func MirrorDevices(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == src {
				return err
			}
			return nil // a node that went away while walking
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "." {
			return nil
		}
		if !mirrored(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeDevice == 0 {
			return nil
		}
		return syncNode(path, filepath.Join(dst, rel))
	})
}

// syncNode makes dst a device node like src: the same type and numbers,
// mode and owner. A node of other numbers at dst is replaced.
func syncNode(src, dst string) error {
	var st, cur unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return fmt.Errorf("device %s: %w", src, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFCHR && t != unix.S_IFBLK {
		return nil
	}
	if err := unix.Lstat(dst, &cur); err == nil && (cur.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT || cur.Rdev != st.Rdev) {
		if cur.Mode&unix.S_IFMT != unix.S_IFCHR && cur.Mode&unix.S_IFMT != unix.S_IFBLK {
			return nil // not a node: something of the namespace's own
		}
		if err := unix.Unlink(dst); err != nil {
			return fmt.Errorf("replace device %s: %w", dst, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("device %s: %w", dst, err)
	}
	if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil && err != unix.EEXIST {
		return fmt.Errorf("create device %s: %w", dst, err)
	}
	// mknod applies the umask; the owner and mode are the distro's.
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		return fmt.Errorf("device %s: %w", dst, err)
	}
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("device %s: %w", dst, err)
	}
	return nil
}

// WatchDevices keeps dst following src after MirrorDevices: a device node
// created in src (a USB adapter attached, a loop device, /dev/dxg) is made
// in dst, one removed from src is removed from dst, a changed mode or
// owner is copied. It returns when ctx ends.
func WatchDevices(ctx context.Context, src, dst string, log logrus.FieldLogger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", src, err)
	}
	defer w.Close()
	watchTree := func(dir string) {
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if rel, _ := filepath.Rel(src, path); rel != "." && !mirrored(rel) {
				return filepath.SkipDir
			}
			if err := w.Add(path); err != nil {
				log.WithError(err).WithField("dir", path).Warn("cannot follow devices there")
			}
			return nil
		})
	}
	watchTree(src)
	// What appeared between the boot's copy and the first watch.
	if err := MirrorDevices(src, dst); err != nil {
		log.WithError(err).Warn("devices not mirrored")
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			log.WithError(err).Warn("device watch")
		case ev := <-w.Events:
			rel, err := filepath.Rel(src, ev.Name)
			if err != nil || !mirrored(rel) {
				continue
			}
			target := filepath.Join(dst, rel)
			switch {
			case ev.Has(fsnotify.Create):
				if st, err := os.Lstat(ev.Name); err == nil && st.IsDir() {
					watchTree(ev.Name)
					if err := MirrorDevices(ev.Name, target); err != nil {
						log.WithError(err).Warn("devices not mirrored")
					}
					continue
				}
				if err := syncNode(ev.Name, target); err != nil {
					log.WithError(err).Warn("device not mirrored")
				} else {
					log.WithField("device", "/dev/"+rel).Debug("device added")
				}
			case ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename):
				removeNode(target, log)
			case ev.Has(fsnotify.Chmod):
				// A changed mode or owner (udev applying its rules).
				if err := syncNode(ev.Name, target); err != nil {
					log.WithError(err).Warn("device not mirrored")
				}
			}
		}
	}
}

// removeNode removes a mirrored device node, or a directory that held
// only such nodes; never anything else.
func removeNode(path string, log logrus.FieldLogger) {
	st, err := os.Lstat(path)
	if err != nil {
		return
	}
	if st.IsDir() {
		if err := MirroredOnly(path); err == nil {
			os.RemoveAll(path) // device nodes only (checked above); one left is harmless
		}
		return
	}
	if st.Mode()&fs.ModeDevice == 0 {
		return
	}
	if err := os.Remove(path); err != nil {
		log.WithError(err).Warn("device not removed")
		return
	}
	log.WithField("device", path).Debug("device removed")
}

// MirroredOnly reports, as nil, that dir holds nothing but device nodes
// and directories of them.
func MirroredOnly(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Type()&fs.ModeDevice == 0 {
			return fmt.Errorf("%s is not a device node", path)
		}
		return nil
	})
}

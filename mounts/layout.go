package mounts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/settings"
	"golang.org/x/sys/unix"
)

// makeLayoutDir makes the layout entry rel and each folder on its way (a
// symlink to a folder counts as one, as for MkdirAll). One that exists
// but is not a folder — a file, a FIFO, a symlink loop, a symlink to
// nothing — never ends in a bare EEXIST or ENOTDIR:
//
//   - when it holds only configuration (etc, etc/docker, etc/ddinit, log,
//     isocache), it is set aside as <name>.bad-<time>, kept as it was, and
//     a new folder made; the boot goes on and reports it (d.Recovered).
//     Nothing ddinit could use can be in a thing that is not a folder,
//     and the person cannot easily reach the data distro to repair it:
//     refusing to boot would keep the engine down over files the boot
//     does without (as for a settings document it cannot use);
//   - when it may hold the engine's images, containers and volumes (var,
//     var/lib, var/lib/*), it is left alone and the error says what it is
//     and what to do: ddinit never moves those.
func (d *DataStore) makeLayoutDir(rel string, now time.Time) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		full := filepath.Join(d.Dir, p)
		what, err := ensureFolder(full)
		if err != nil {
			return fmt.Errorf("data store %s: %s: %w", d.Dir, p, err)
		}
		if what == "" {
			continue
		}
		using, ok := replacement(p)
		if !ok {
			return fmt.Errorf("data store %s: %s is %s, not a directory: the engine keeps its images, containers and volumes under var/lib, so ddinit leaves it as it is: move it away (or put back the folder it replaced) and start Docker Desktop again", d.Dir, p, what)
		}
		kept, err := settings.MoveAside(full, now)
		if err != nil {
			return fmt.Errorf("data store %s: %s is %s, not a directory, and it could not be set aside (%v): move it away and start Docker Desktop again", d.Dir, p, what, err)
		}
		if err := os.Mkdir(full, 0o755); err != nil {
			return fmt.Errorf("data store %s: create %s (what was there is kept as %s): %w", d.Dir, p, kept, unwrapPathError(err))
		}
		d.Recovered = append(d.Recovered, settings.Recovery{File: full, Reason: "it was " + what + ", not a directory", KeptAs: kept, Using: using})
	}
	return nil
}

// ensureFolder makes sure path is a folder, making it when nothing is
// there; otherwise it says what is there instead ("" for a folder). An
// error is one that says nothing of what is there (EACCES, EIO).
func ensureFolder(path string) (string, error) {
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if err == unix.ENOENT {
		if unix.Lstat(path, &st) == nil {
			target, _ := os.Readlink(path)
			return fmt.Sprintf("a symbolic link to %s, which does not exist", target), nil
		}
		err = os.Mkdir(path, 0o755)
		if err == nil {
			return "", nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create: %w", unwrapPathError(err))
		}
		err = unix.Stat(path, &st) // made meanwhile: whatever it is
	}
	switch {
	case err == unix.ELOOP:
		return "a symbolic link loop", nil
	case err != nil:
		return "", fmt.Errorf("stat: %w", err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return "", nil
	}
	return describe(path), nil
}

// describe says what path is: its kind, and for a symlink what it leads
// to.
func describe(path string) string {
	var lst, st unix.Stat_t
	if err := unix.Lstat(path, &lst); err != nil {
		return fmt.Sprintf("unreadable (%v)", err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFLNK {
		return regularfile.Kind(lst.Mode)
	}
	target, _ := os.Readlink(path)
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Sprintf("a symbolic link to %s (%v)", target, err)
	}
	return fmt.Sprintf("a symbolic link to %s, %s", target, regularfile.Kind(st.Mode))
}

// replacement says what a new, empty folder at p means, when every layout
// entry at or under p is replaceable.
func replacement(p string) (string, bool) {
	if using, ok := replaceable[p]; ok {
		return using, true
	}
	var under []string
	for _, e := range Layout {
		if strings.HasPrefix(e, p+"/") {
			using, ok := replaceable[e]
			if !ok {
				return "", false
			}
			under = append(under, using)
		}
	}
	if len(under) == 0 {
		return "", false
	}
	slices.Sort(under)
	return fmt.Sprintf("a new, empty %s (%s)", p, strings.Join(under, "; ")), true
}

package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Hierarchy is the cgroup file system as mounted at Root.
type Hierarchy struct {
	Root string // /sys/fs/cgroup
	V2   bool   // one unified hierarchy (else v1: a directory per controller)
}

// Detect reads which hierarchy is mounted at root.
func Detect(root string) (Hierarchy, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return Hierarchy{}, fmt.Errorf("cgroup hierarchy at %s: %w", root, err)
	}
	return Hierarchy{Root: root, V2: st.Type == unix.CGROUP2_SUPER_MAGIC}, nil
}

// dirs are the directories of the cgroup path in every hierarchy (v1:
// each controller mounted under Root, named ones too).
func (h Hierarchy) dirs(path string) []string {
	if h.V2 {
		return []string{filepath.Join(h.Root, path)}
	}
	entries, _ := os.ReadDir(h.Root)
	var out []string
	for _, e := range entries {
		ctrl := filepath.Join(h.Root, e.Name())
		// Only real hierarchies: v1 mounts each controller's (a symlink
		// such as cpu -> cpu,cpuacct is the same one twice).
		if !e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join(ctrl, "cgroup.procs")); err != nil {
			continue
		}
		out = append(out, filepath.Join(ctrl, path))
	}
	return out
}

// Place moves pid into the cgroup path (made where missing), in every
// hierarchy; v2 gives the parent the controllers its children use.
func (h Hierarchy) Place(path string, pid int) error {
	if !strings.HasPrefix(path, "/") || strings.Contains(path, "..") {
		return fmt.Errorf("cgroup path %q: want an absolute path", path)
	}
	var errs []error
	for _, dir := range h.dirs(path) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("move %d into %s: %w", pid, dir, err))
		}
	}
	return errors.Join(errs...)
}

// Contains reports whether pid is in the cgroup path or below it (v2; v1:
// the freezer hierarchy's view).
func (h Hierarchy) Contains(path string, pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if h.V2 && parts[0] == "0" || !h.V2 && strings.Contains(","+parts[1]+",", ",freezer,") {
			return parts[2] == path || strings.HasPrefix(parts[2], strings.TrimSuffix(path, "/")+"/")
		}
	}
	return false
}

// Freeze freezes (or thaws) the cgroup path and everything below it, and
// returns once the kernel says it is done (or after timeout: an error).
func (h Hierarchy) Freeze(path string, frozen bool, timeout time.Duration) error {
	var file, want, done string
	if h.V2 {
		file, want = filepath.Join(h.Root, path, "cgroup.freeze"), map[bool]string{true: "1", false: "0"}[frozen]
		done = "frozen " + want
	} else {
		file, want = filepath.Join(h.Root, "freezer", path, "freezer.state"), map[bool]string{true: "FROZEN", false: "THAWED"}[frozen]
		done = want
	}
	if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
		return fmt.Errorf("freeze %s: %w", path, err)
	}
	state := file
	if h.V2 {
		state = filepath.Join(h.Root, path, "cgroup.events")
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(2 * time.Millisecond) {
		b, err := os.ReadFile(state)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), done) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s of %s not done within %s (%s)", want, path, timeout, strings.TrimSpace(string(b)))
		}
	}
}

// Frozen reports whether the cgroup path is frozen.
func (h Hierarchy) Frozen(path string) bool {
	if h.V2 {
		b, _ := os.ReadFile(filepath.Join(h.Root, path, "cgroup.events"))
		return strings.Contains(string(b), "frozen 1")
	}
	b, _ := os.ReadFile(filepath.Join(h.Root, "freezer", path, "freezer.state"))
	return strings.TrimSpace(string(b)) == "FROZEN"
}

// Reclaim asks the kernel to take back the memory the cgroup path and its
// children hold (page cache first) and says what it did: v2 writes
// memory.reclaim on path (what it holds, in one go); v1 has no reclaim of
// a cgroup with tasks: memory.force_empty on each cgroup below path that
// has none, and a cgroup with tasks is left as it is.
func (h Hierarchy) Reclaim(path string) (string, error) {
	if h.V2 {
		dir := filepath.Join(h.Root, path)
		cur, err := os.ReadFile(filepath.Join(dir, "memory.current"))
		if err != nil {
			return "", fmt.Errorf("memory of %s: %w", path, err)
		}
		n := strings.TrimSpace(string(cur))
		// The kernel reclaims what it can and says EAGAIN when it could
		// not reach the amount: what it did reclaim stays reclaimed.
		if err := os.WriteFile(filepath.Join(dir, "memory.reclaim"), []byte(n), 0o644); err != nil && !errors.Is(err, unix.EAGAIN) {
			return "", fmt.Errorf("memory.reclaim of %s: %w", path, err)
		}
		after, _ := os.ReadFile(filepath.Join(dir, "memory.current"))
		return fmt.Sprintf("cgroup v2 memory.reclaim: %s bytes before, %s after", n, strings.TrimSpace(string(after))), nil
	}
	base := filepath.Join(h.Root, "memory", path)
	emptied, busy := 0, 0
	err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if len(strings.TrimSpace(string(procs))) > 0 {
			busy++
			return nil
		}
		if os.WriteFile(filepath.Join(p, "memory.force_empty"), []byte("0"), 0o644) == nil {
			emptied++
		}
		return nil
	})
	return fmt.Sprintf("cgroup v1 (no memory.reclaim): memory.force_empty on %d cgroups without processes; %d with processes left as they are", emptied, busy), err
}

// Remove removes the cgroup path in every hierarchy, and its parent when
// that is left empty; a cgroup that still has processes stays (rmdir
// refuses it).
func (h Hierarchy) Remove(path string) {
	for _, dir := range h.dirs(path) {
		if os.Remove(dir) == nil {
			os.Remove(filepath.Dir(dir)) // only when empty
		}
	}
}

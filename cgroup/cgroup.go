package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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
		if err := inheritCpuset(dir, path); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("move %d into %s: %w", pid, dir, err))
		}
	}
	return errors.Join(errs...)
}

// inheritCpuset gives each new cgroup of a v1 cpuset hierarchy on the way
// to dir its parent's CPUs and memory nodes: a v1 cpuset cgroup starts
// with none, and a process cannot join it (ENOSPC) until it has some.
// Other hierarchies have no such files and are left as they are.
func inheritCpuset(dir, path string) error {
	levels := strings.Split(strings.Trim(path, "/"), "/")
	top := dir
	for range levels {
		top = filepath.Dir(top)
	}
	if _, err := os.Stat(filepath.Join(top, "cpuset.cpus")); err != nil {
		return nil // not a cpuset hierarchy
	}
	parent := top
	for _, l := range levels {
		cur := filepath.Join(parent, l)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			mine, err := os.ReadFile(filepath.Join(cur, f))
			if err != nil {
				return fmt.Errorf("cpuset of %s: %w", cur, err)
			}
			if len(strings.TrimSpace(string(mine))) > 0 {
				continue
			}
			theirs, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return fmt.Errorf("cpuset of %s: %w", parent, err)
			}
			if err := os.WriteFile(filepath.Join(cur, f), theirs, 0o644); err != nil {
				return fmt.Errorf("cpuset of %s: %w", cur, err)
			}
		}
		parent = cur
	}
	return nil
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

// Procs lists the processes of the cgroup that membership (the content
// of a /proc/PID/cgroup file) names, and of the cgroups below it, as pids
// of the reader's pid namespace (the kernel prints them so): v2 the
// unified line's; v1 that of pids, memory or freezer, else of another
// controller mounted under Root. It only reads. The root cgroup is
// refused: every process of the machine is in it or below.
func (h Hierarchy) Procs(membership string) ([]int, error) {
	var dirs []string
	for _, line := range strings.Split(membership, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" || strings.Contains(parts[2], "..") || !strings.HasPrefix(parts[2], "/") {
			continue
		}
		if h.V2 {
			if parts[0] == "0" && parts[1] == "" {
				dirs = append(dirs, filepath.Join(h.Root, parts[2]))
			}
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			if ctrl == "" || strings.HasPrefix(ctrl, "name=") {
				continue
			}
			dir := filepath.Join(h.Root, ctrl, parts[2])
			if ctrl == "pids" || ctrl == "memory" || ctrl == "freezer" {
				dirs = append([]string{dir}, dirs...)
			} else {
				dirs = append(dirs, dir)
			}
		}
	}
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			continue
		}
		var pids []int
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil // a cgroup below that went meanwhile
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil && p == dir {
				return err
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("processes of cgroup %s: %w", dir, err)
		}
		return pids, nil
	}
	return nil, fmt.Errorf("no cgroup below the root in %q under %s", strings.TrimSpace(membership), h.Root)
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
// memory.reclaim on path for its page cache ("file" in memory.stat: with
// no swap nothing else can go), v1 has no reclaim of a cgroup with tasks:
// memory.force_empty on each cgroup below path that has none, and a
// cgroup with tasks is left as it is.
//
// A v2 request the kernel cannot meet can keep the writer in the kernel
// for minutes (it goes on while anything at all is freed — slab counts —
// and stops only when nothing is, or at a signal): each request is for
// at most half of what is left (up to reclaimChunk), and each, and all of
// them, are bounded in time (reclaimBudget, or until ctx ends) by a
// signal to the thread that writes.
func (h Hierarchy) Reclaim(ctx context.Context, path string) (string, error) {
	if h.V2 {
		dir := filepath.Join(h.Root, path)
		stat := filepath.Join(dir, "memory.stat")
		before, err := statField(stat, "file")
		if err != nil {
			return "", fmt.Errorf("memory of %s: %w", path, err)
		}
		ctx, cancel := context.WithTimeout(ctx, reclaimBudget)
		defer cancel()
		left, cut := before, ""
		for left >= reclaimLeast && ctx.Err() == nil {
			ask := min(left/2, reclaimChunk) &^ 4095
			err := writeBounded(ctx, filepath.Join(dir, "memory.reclaim"), strconv.FormatInt(ask, 10))
			if errors.Is(err, unix.EINTR) {
				if ctx.Err() == nil {
					continue // another signal: the same request again
				}
				cut = " (cut short: " + context.Cause(ctx).Error() + ")"
				break
			}
			// EAGAIN: the kernel could not reach the amount; what it did
			// reclaim stays reclaimed, and there is no more.
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				return "", fmt.Errorf("memory.reclaim of %s: %w", path, err)
			}
			now, err := statField(stat, "file")
			if err != nil || now >= left {
				break // nothing more comes back
			}
			left = now
		}
		after, _ := statField(stat, "file")
		return fmt.Sprintf("cgroup v2 memory.reclaim: page cache %d bytes before, %d after%s", before, after, cut), nil
	}
	base := filepath.Join(h.Root, "memory", path)
	emptied, busy := 0, 0
	err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if ctx.Err() != nil {
			return filepath.SkipAll // the engine is wanted again
		}
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

// Reclaim's bounds: the largest request, the least worth a request, and
// the time all of them may take.
const (
	reclaimChunk  = 64 << 20
	reclaimLeast  = 1 << 20
	reclaimBudget = 3 * time.Second
)

// writeBounded writes value to a control file from a thread of its own
// and, if the write has not returned when ctx ends, signals that thread
// until it does: a kernel loop that checks for signals returns EINTR
// (which the plain write, unlike os.File's, does not retry). The signal
// is SIGURG, which the Go runtime takes as a preemption request.
func writeBounded(ctx context.Context, file, value string) error {
	fd, err := unix.Open(file, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: file, Err: err}
	}
	defer unix.Close(fd)
	tid := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		_, err := unix.Write(fd, []byte(value))
		done <- err
	}()
	t := <-tid
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		unix.Tgkill(os.Getpid(), t, unix.SIGURG)
		select {
		case err := <-done:
			return err
		case <-tick.C:
		}
	}
}

// statField is one field of a memory.stat file.
func statField(file, field string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+" "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %q", file, field)
}

// Remove removes the cgroup path in every hierarchy; a cgroup that still
// has processes or children stays (rmdir refuses it).
func (h Hierarchy) Remove(path string) {
	for _, dir := range h.dirs(path) {
		os.Remove(dir)
	}
}

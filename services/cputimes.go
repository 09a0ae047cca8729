package services

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// cpuTimes is how long a process's threads have run on a CPU and how long
// they have waited, ready to run, for one (the kernel's schedstat), in
// all: liveness tells a process starved by a busy machine from a hung one
// by them.
type cpuTimes struct {
	ran, waited time.Duration
}

// starvedShare is how much of a silence of silent the process spent held
// back by a busy machine, from its times at the silence's start and now:
// the time its threads waited, counted at most in the share of its
// runnable time it spent waiting. A process that sleeps (deadlocked,
// stopped) waits for nothing; one that runs (spinning) waits for a small
// share; one starved waits for most of what it asked for.
func starvedShare(then, now cpuTimes, silent time.Duration) time.Duration {
	ran, waited := max(now.ran-then.ran, 0), max(now.waited-then.waited, 0)
	if waited == 0 {
		return 0
	}
	share := time.Duration(float64(silent) * float64(waited) / float64(ran+waited))
	return min(waited, share, silent)
}

// readCPUTimes sums the times of every thread of pid
// (/proc/PID/task/TID/schedstat). A thread that ends while they are read
// is left out; the kernel keeps no schedstat (built without
// CONFIG_SCHED_INFO) is errors.ErrUnsupported.
func readCPUTimes(pid int) (cpuTimes, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	threads, err := os.ReadDir(dir)
	if err != nil {
		return cpuTimes{}, fmt.Errorf("threads of pid %d: %w", pid, err)
	}
	var sum cpuTimes
	read := 0
	for _, th := range threads {
		b, err := os.ReadFile(filepath.Join(dir, th.Name(), "schedstat"))
		if errors.Is(err, os.ErrNotExist) {
			if _, gone := os.Stat(filepath.Join(dir, th.Name())); gone == nil {
				return cpuTimes{}, fmt.Errorf("cpu times of pid %d: %w", pid, errors.ErrUnsupported)
			}
			continue // the thread ended
		}
		if err != nil {
			continue // the thread ended (ESRCH)
		}
		t, err := parseSchedstat(b)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("cpu times of pid %d, thread %s: %w", pid, th.Name(), err)
		}
		sum.ran += t.ran
		sum.waited += t.waited
		read++
	}
	if read == 0 {
		return cpuTimes{}, fmt.Errorf("cpu times of pid %d: no thread left", pid)
	}
	return sum, nil
}

// parseSchedstat reads a schedstat line: nanoseconds on a CPU,
// nanoseconds waiting for one, and time slices run ("4118 92 3\n"). A
// line cut short (no newline) is refused: its last digits may be missing.
func parseSchedstat(b []byte) (cpuTimes, error) {
	line, ok := bytes.CutSuffix(b, []byte("\n"))
	if !ok || bytes.IndexByte(line, '\n') >= 0 {
		return cpuTimes{}, fmt.Errorf("schedstat %q: want one line", b)
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return cpuTimes{}, fmt.Errorf("schedstat %q: want three numbers", b)
	}
	var ns [2]uint64
	for i := range ns {
		v, err := strconv.ParseUint(string(f[i]), 10, 63)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("schedstat %q: %q is not a count of nanoseconds", b, f[i])
		}
		ns[i] = v
	}
	return cpuTimes{ran: time.Duration(ns[0]), waited: time.Duration(ns[1])}, nil
}

// cpuTimesOf reads pid's CPU times for liveness; nil without a pid.
func (s *Supervisor) cpuTimesOf(pid int) func() (cpuTimes, bool) {
	if pid <= 0 {
		return nil
	}
	return func() (cpuTimes, bool) {
		t, err := s.readCPUTimes(pid)
		return t, err == nil
	}
}

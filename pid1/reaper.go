package pid1

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Reaper is PID 1's child handling: it reaps every exited child with
// wait4(-1) and hands the status to whoever started that child through it.
// Start registers the pid while holding the same lock the reaping loop
// takes, so a child that dies at once is never reaped before anyone waits
// for it, and nothing else ever calls wait.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]waiter
	orphans atomic.Int64
	log     *logrus.Entry
}

type waiter struct {
	ch   chan unix.WaitStatus
	proc *os.Process
}

// NewReaper starts reaping; call it before starting any child.
func NewReaper(log *logrus.Entry) *Reaper {
	r := &Reaper{waiters: map[int]waiter{}, log: log}
	sig := make(chan os.Signal, 64)
	signal.Notify(sig, unix.SIGCHLD)
	go func() {
		for range sig {
			r.reap()
		}
	}()
	return r
}

// Start starts cmd and returns a channel that gets its exit status. cmd's
// standard streams must be files (or nil): exec's copying goroutines need
// cmd.Wait, which a reaper cannot allow.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[cmd.Process.Pid] = waiter{ch: ch, proc: cmd.Process}
	return ch, nil
}

func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if w, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			w.ch <- ws
			w.proc.Release()
			continue
		}
		n := r.orphans.Add(1)
		r.log.WithFields(logrus.Fields{"pid": pid, "reaped": n}).Debug("reaped an orphan")
	}
}

// Orphans is how many children nobody waited for were reaped.
func (r *Reaper) Orphans() int64 { return r.orphans.Load() }

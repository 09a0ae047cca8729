package services

import (
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Spawner starts a process and reports its exit status once. PID 1 passes
// one that cooperates with its reaper.
type Spawner interface {
	Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error)
}

// DirectSpawner waits with cmd.Wait: right wherever the caller is not the
// reaper of last resort.
type DirectSpawner struct{}

// Start implements Spawner.
func (DirectSpawner) Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
			ch <- unix.WaitStatus(ws)
		} else {
			ch <- 0
		}
	}()
	return ch, nil
}

// DefaultPath is the PATH containerd and the services start with.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

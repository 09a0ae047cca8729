// Command pause is the process that holds a pod's namespaces: the sandbox
// container's only program (the CRI's "pause image"). It waits, reaps any
// child handed to it as a PID namespace's init, and exits when told to
// stop. Built static by scripts/build-kube.sh into an image of one file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

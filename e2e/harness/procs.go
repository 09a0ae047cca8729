package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/mounts"
)

// Pid1 is the host pid of `ddinit init`, PID 1 of the namespaces: the
// child of ddinit run that lives in a pid namespace of its own.
func (in *Instance) Pid1() int {
	in.t.Helper()
	outer := in.cmd.Process.Pid
	own, _ := os.Readlink("/proc/self/ns/pid")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, p := range Processes() {
			if p.PPid != outer {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.Pid)); err == nil && ns != own {
				return p.Pid
			}
		}
	}
	in.t.Fatal("no PID 1 found under ddinit run")
	return 0
}

// PidNS is the pid namespace of the instance's PID 1.
func (in *Instance) PidNS() string {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", in.Pid1()))
	if err != nil {
		in.t.Fatal(err)
	}
	return ns
}

// Process is one line of the machine's process table.
type Process struct {
	Pid, PPid int
	Comm      string
	State     string // /proc/PID/stat's state letter
}

// Processes is the machine's process table, as this test sees it.
func Processes() []Process {
	var out []Process
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		out = append(out, Process{Pid: pid, PPid: ppid, Comm: s[open+1 : close], State: fields[0]})
	}
	return out
}

// InNS lists the processes in pid namespace ns.
func InNS(ns string) []Process {
	var out []Process
	for _, p := range Processes() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.Pid)); err == nil && l == ns {
			out = append(out, p)
		}
	}
	return out
}

// FindComm is the host pids of the processes named comm in pid namespace
// ns.
func FindComm(ns, comm string) []int {
	var pids []int
	for _, p := range InNS(ns) {
		if p.Comm == comm {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

// HostMounts lists the host's mounts at or under any of dirs, or whose
// source or root names one.
func HostMounts(t testing.TB, dirs ...string) []string {
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range table {
		for _, d := range dirs {
			if m.Point == d || strings.HasPrefix(m.Point, d+"/") || strings.Contains(m.Root, d) || strings.Contains(m.Source, d) {
				out = append(out, fmt.Sprintf("%s %s (%s from %s)", m.Point, m.FSType, m.Root, m.Source))
			}
		}
	}
	return out
}

// CPUTicks is a process's utime+stime, in clock ticks.
func CPUTicks(t testing.TB, pid int) int {
	t.Helper()
	user, sys := CPUSplit(t, pid)
	return user + sys
}

// CPUSplit is a process's utime and stime, in clock ticks.
func CPUSplit(t testing.TB, pid int) (user, sys int) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	user, _ = strconv.Atoi(f[11])
	sys, _ = strconv.Atoi(f[12])
	return user, sys
}

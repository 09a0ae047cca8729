package cli

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// runEnter joins the namespaces of PID 1 (or of a service's process) and
// runs a shell or the given command there, through nsenter.
func runEnter(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	return func() error {
		rest := fs.beforeDashes()
		if len(rest) > 1 {
			return usagef("at most one SERVICE before the command's \"--\" (got %q)", rest)
		}
		var service string
		if len(rest) == 1 {
			service = rest[0]
		}
		command := fs.Args()[len(rest):]
		if len(command) == 0 {
			command = []string{"/bin/sh"}
		}
		return enter(*controlAddr, service, command)
	}
}

func enter(controlAddr, service string, command []string) error {
	st, err := fetchStatus(controlAddr)
	if err != nil {
		return err
	}
	if st.HostPID == 0 {
		return fmt.Errorf("the control API does not say where PID 1 is")
	}
	target := st.HostPID
	if service != "" {
		inner := 0
		for _, s := range st.Services {
			if s.Name == service {
				inner = s.PID
			}
		}
		if inner == 0 {
			return fmt.Errorf("service %s is not running (see ddinit status)", service)
		}
		if target, err = hostPID(st.HostPID, inner); err != nil {
			return err
		}
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return fmt.Errorf("enter needs nsenter (util-linux or busybox)")
	}
	argv := append([]string{"nsenter", "-t", strconv.Itoa(target), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"}, command...)
	return syscall.Exec(nsenter, argv, os.Environ())
}

// hostPID maps a pid inside PID 1's namespace to the distro's pid.
func hostPID(pid1, inner int) (int, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	if err != nil {
		return 0, err
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if l, err := os.Readlink(d + "/ns/pid"); err != nil || l != ns {
			continue
		}
		f, err := os.Open(d + "/status")
		if err != nil {
			continue
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "NSpid:"); ok {
				fields := strings.Fields(v)
				if len(fields) > 1 && fields[len(fields)-1] == strconv.Itoa(inner) {
					f.Close()
					return strconv.Atoi(filepath.Base(d))
				}
			}
		}
		f.Close()
	}
	return 0, fmt.Errorf("no process %d in PID 1's namespace", inner)
}

package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CPUWaited is how long, in all, the processes of the cgroup path (and
// those below it) have been ready to run with no CPU to run on: the
// "some" total of its cpu.pressure (PSI), which only grows. Only cgroup v2
// keeps it per cgroup: on v1 it is read from the v2 hierarchy mounted
// beside it (Root/unified, where runc and crun make the same path), and is
// errors.ErrUnsupported without one, as it is when the kernel keeps no
// pressure (built without PSI, or booted psi=0).
func (h Hierarchy) CPUWaited(path string) (time.Duration, error) {
	dir := h.Root
	if !h.V2 {
		dir = filepath.Join(h.Root, "unified")
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			return 0, fmt.Errorf("cpu pressure of %s: no cgroup v2 hierarchy beside v1: %w", path, errors.ErrUnsupported)
		}
	}
	file := filepath.Join(dir, path, "cpu.pressure")
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		if _, dir := os.Stat(filepath.Dir(file)); dir == nil {
			err = errors.ErrUnsupported
		}
	}
	if err != nil {
		return 0, fmt.Errorf("cpu pressure of %s: %w", path, err)
	}
	d, err := someTotal(b)
	if err != nil {
		return 0, fmt.Errorf("cpu pressure of %s: %w", path, err)
	}
	return d, nil
}

// someTotal reads the total of the "some" line of a pressure file:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=12345
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//
// in microseconds. A file cut short before that total ends in a newline
// is refused: its last digits may be missing.
func someTotal(b []byte) (time.Duration, error) {
	for line := range bytes.Lines(b) {
		fields, ok := bytes.CutPrefix(line, []byte("some "))
		if !ok {
			continue
		}
		if !bytes.HasSuffix(fields, []byte("\n")) {
			return 0, errors.New(`the "some" line is cut short`)
		}
		for _, f := range bytes.Fields(fields) {
			v, ok := bytes.CutPrefix(f, []byte("total="))
			if !ok {
				continue
			}
			us, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || us < 0 || us > int64(time.Duration(1<<63-1)/time.Microsecond) {
				return 0, fmt.Errorf("total %q: not a count of microseconds", v)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
		return 0, errors.New(`the "some" line has no total`)
	}
	return 0, errors.New(`no "some" line`)
}

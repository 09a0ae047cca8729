package services

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A schedstat line is read as nanoseconds run and waited; a line cut
// anywhere, or not a schedstat line, is an error and never a smaller
// figure.
func TestParseSchedstat(t *testing.T) {
	const line = "1411872839 619158696 1149\n"
	if c, err := parseSchedstat([]byte(line)); err != nil || c.ran != 1411872839 || c.waited != 619158696 {
		t.Fatalf("got %+v, %v", c, err)
	}
	for i := range len(line) {
		if c, err := parseSchedstat([]byte(line[:i])); err == nil {
			t.Fatalf("cut at %d (%q): read %+v", i, line[:i], c)
		}
	}
	for _, bad := range []string{"\n", "1 2\n", "1 2 3 4\n", "-1 2 3\n", "1 -2 3\n", "1 2e3 3\n", "1 2 3\n4 5 6\n", "99999999999999999999 1 1\n"} {
		if c, err := parseSchedstat([]byte(bad)); err == nil {
			t.Fatalf("%q: read %+v", bad, c)
		}
	}
}

// FuzzParseSchedstat: what is read is what the line says, told apart by
// a reading of its own.
func FuzzParseSchedstat(f *testing.F) {
	f.Add([]byte("1411872839 619158696 1149\n"))
	f.Add([]byte("0 0 0\n"))
	f.Add([]byte("9223372036854775807 1 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseSchedstat(b)
		if err != nil {
			return
		}
		fields := bytes.Fields(b)
		if len(fields) != 3 {
			t.Fatalf("%q read as %+v", b, c)
		}
		ran, err1 := strconv.ParseUint(string(fields[0]), 10, 63)
		waited, err2 := strconv.ParseUint(string(fields[1]), 10, 63)
		if err1 != nil || err2 != nil || !bytes.HasSuffix(b, []byte("\n")) || bytes.Count(b, []byte("\n")) != 1 {
			t.Fatalf("%q read as %+v", b, c)
		}
		if time.Duration(ran) != c.ran || time.Duration(waited) != c.waited {
			t.Fatalf("%q read as %+v; want %d and %d", b, c, ran, waited)
		}
	})
}

// The share of a silence left out: what the threads waited, at most in
// the share of their runnable time spent waiting, never more than the
// silence; counters that go back (a thread ended) leave nothing out.
func TestStarvedShare(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		name        string
		then, now   cpuTimes
		silent, out time.Duration
	}{
		{"asleep: waited for nothing", cpuTimes{}, cpuTimes{}, 80 * s, 0},
		{"spinning on a free CPU", cpuTimes{}, cpuTimes{ran: 80 * s}, 80 * s, 0},
		{"starved: got a quarter of what it asked", cpuTimes{}, cpuTimes{ran: 20 * s, waited: 60 * s}, 80 * s, 60 * s},
		{"many threads waiting: at most the silence", cpuTimes{}, cpuTimes{ran: 10 * s, waited: 400 * s}, 80 * s, 78048780487 * time.Nanosecond},
		{"mostly asleep, a little waiting", cpuTimes{}, cpuTimes{ran: 1 * s, waited: 1 * s}, 80 * s, 1 * s},
		{"counters went back", cpuTimes{ran: 50 * s, waited: 50 * s}, cpuTimes{ran: 10 * s, waited: 10 * s}, 80 * s, 0},
		{"only what happened since", cpuTimes{ran: 5 * s, waited: 100 * s}, cpuTimes{ran: 85 * s, waited: 100 * s}, 80 * s, 0},
	} {
		if got := starvedShare(c.then, c.now, c.silent); got != c.out {
			t.Errorf("%s: %v; want %v", c.name, got, c.out)
		}
	}
}

// The kernel's own figures: two busy processes sharing one CPU wait for
// it and run in turns; a sleeping one waits for nothing; a process that
// is gone is an error.
func TestReadCPUTimesOnTheKernel(t *testing.T) {
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/schedstat"); err != nil {
		t.Skipf("the kernel keeps no schedstat: %v", err)
	}
	var busy []int
	for range 2 {
		cmd := start(t, "sh", "-c", "while :; do :; done")
		one := unix.CPUSet{}
		one.Set(0)
		if err := unix.SchedSetaffinity(cmd.Process.Pid, &one); err != nil {
			t.Fatalf("pin to CPU 0: %v", err)
		}
		busy = append(busy, cmd.Process.Pid)
	}
	sleeping := start(t, "sleep", "60").Process.Pid
	busy0, err := readCPUTimes(busy[0])
	if err != nil {
		t.Fatal(err)
	}
	sleeping0, err := readCPUTimes(sleeping)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's clock, not the test's: poll until the first busy one
	// has waited 300 ms, for at most 20 s.
	began := time.Now()
	for {
		c, err := readCPUTimes(busy[0])
		if err != nil {
			t.Fatal(err)
		}
		if c.waited-busy0.waited >= 300*time.Millisecond {
			// How much it ran meanwhile depends on what else the machine
			// runs on CPU 0; that it ran at all, on the times being its own.
			if c.ran <= busy0.ran {
				t.Fatalf("a busy process did not run while it waited %v", c.waited-busy0.waited)
			}
			break
		}
		if time.Since(began) > 20*time.Second {
			t.Fatalf("two busy processes on one CPU: one waited %v in %v", c.waited-busy0.waited, time.Since(began))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, _ := readCPUTimes(sleeping); c.waited-sleeping0.waited > 50*time.Millisecond {
		t.Fatalf("a sleeping process waited %v for a CPU", c.waited-sleeping0.waited)
	}
	gone := exec.Command("true")
	gone.Run()
	if _, err := readCPUTimes(gone.Process.Pid); err == nil || errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("a process that is gone: %v", err)
	}
}

// start runs a command until the test ends.
func start(t *testing.T, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

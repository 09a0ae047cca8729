package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The "some" total is read as microseconds; a file cut anywhere, or not
// a pressure file at all, is an error and never a smaller figure.
func TestSomeTotal(t *testing.T) {
	full := "some avg10=1.50 avg60=0.30 avg300=0.06 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
	if d, err := someTotal([]byte(full)); err != nil || d != 2500*time.Millisecond {
		t.Fatalf("got %v, %v; want 2.5s", d, err)
	}
	// The "full" line may come first or be missing (the root's cpu.pressure
	// had no "full" line before Linux 5.13).
	if d, err := someTotal([]byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")); err != nil || d != 0 {
		t.Fatalf("no full line: %v, %v", d, err)
	}
	for i := range len("some avg10=1.50 avg60=0.30 avg300=0.06 total=2500000\n") {
		if d, err := someTotal([]byte(full[:i])); err == nil {
			t.Fatalf("cut at %d (%q): read %v", i, full[:i], d)
		}
	}
	for _, bad := range []string{
		"", "\n", "full avg10=0.00 total=5\n", "some avg10=0.00\n", "some total=-5\n",
		"some total=1e6\n", "some total=99999999999999999999\n", "some total=\n",
	} {
		if d, err := someTotal([]byte(bad)); err == nil {
			t.Fatalf("%q: read %v", bad, d)
		}
	}
}

func FuzzSomeTotal(f *testing.F) {
	f.Add([]byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"))
	f.Add([]byte("some total=9223372036854775\n"))
	f.Add([]byte("full total=1\nsome total=2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := someTotal(b)
		if err == nil && d < 0 {
			t.Fatalf("%q: negative %v", b, d)
		}
	})
}

// On v1 alone, and where a cgroup's directory has no cpu.pressure (no
// PSI), the answer is ErrUnsupported; a cgroup that is not there is an
// error of its own. On v1 with v2 beside it (Root/unified) the v2 one is
// read.
func TestCPUWaitedUnsupported(t *testing.T) {
	v1 := fakeV1(t)
	if _, err := v1.CPUWaited("/ddinit"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("v1: %v", err)
	}
	os.MkdirAll(filepath.Join(v1.Root, "unified/ddinit/etcd"), 0o755)
	os.WriteFile(filepath.Join(v1.Root, "unified/cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(v1.Root, "unified/ddinit/etcd/cpu.pressure"), []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\n"), 0o644)
	if d, err := v1.CPUWaited("/ddinit/etcd"); err != nil || d != 1500*time.Microsecond {
		t.Fatalf("v1 beside v2: %v, %v", d, err)
	}
	v2 := Hierarchy{Root: t.TempDir(), V2: true}
	os.MkdirAll(filepath.Join(v2.Root, "ddinit/etcd"), 0o755)
	if _, err := v2.CPUWaited("/ddinit/etcd"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("no cpu.pressure: %v", err)
	}
	if _, err := v2.CPUWaited("/ddinit/gone"); err == nil || errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("no cgroup: %v", err)
	}
}

// The kernel's own figure: two busy processes sharing one CPU in a cgroup
// wait for it about half the time, and the total says so; a sleeping one
// in another cgroup waits for nothing.
func TestCPUWaitedOnTheKernel(t *testing.T) {
	h := realV2(t)
	busy := testCgroup(t, h, "busy")
	idle := testCgroup(t, h, "idle")
	for range 2 {
		cmd := start(t, "sh", "-c", "while :; do :; done")
		one := unix.CPUSet{}
		one.Set(0)
		if err := unix.SchedSetaffinity(cmd.Process.Pid, &one); err != nil {
			t.Fatalf("pin to CPU 0: %v", err)
		}
		if err := h.Place(busy, cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Place(idle, start(t, "sleep", "60").Process.Pid); err != nil {
		t.Fatal(err)
	}
	busy0, err := h.CPUWaited(busy)
	if err != nil {
		t.Fatal(err)
	}
	idle0, err := h.CPUWaited(idle)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's clock, not the test's: poll until the busy cgroup has
	// waited 300 ms (about 300 ms of wall time), for at most 20 s.
	began := time.Now()
	for {
		d, err := h.CPUWaited(busy)
		if err != nil {
			t.Fatal(err)
		}
		if d-busy0 >= 300*time.Millisecond {
			break
		}
		if time.Since(began) > 20*time.Second {
			t.Fatalf("two busy processes on one CPU waited %v in %v", d-busy0, time.Since(began))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d, _ := h.CPUWaited(idle); d-idle0 > 50*time.Millisecond {
		t.Fatalf("a sleeping process waited %v for a CPU", d-idle0)
	}
}

// realV2 is the machine's cgroup v2 hierarchy (alone at /sys/fs/cgroup, or
// beside v1 at /sys/fs/cgroup/unified), to make cgroups in as root.
func realV2(t *testing.T) Hierarchy {
	if os.Getuid() != 0 {
		t.Skip("making a cgroup needs root")
	}
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		if h, err := Detect(root); err == nil && h.V2 {
			if _, err := os.Stat(filepath.Join(root, "cgroup.pressure")); err != nil {
				if _, err := os.Stat(filepath.Join(root, "cpu.pressure")); err != nil {
					t.Skipf("the kernel keeps no pressure (PSI) in %s", root)
				}
			}
			return h
		}
	}
	t.Skip("no cgroup v2 hierarchy on this machine")
	return Hierarchy{}
}

// testCgroup is a cgroup of the test's own, removed with what it holds.
func testCgroup(t *testing.T, h Hierarchy, name string) string {
	path := fmt.Sprintf("/ddinit-test-%d-%s", os.Getpid(), name)
	if err := os.Mkdir(filepath.Join(h.Root, path), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(h.Root, path, "cgroup.kill"), []byte("1"), 0o644)
		// rmdir is refused until the killed processes are gone.
		for range 100 {
			err := os.Remove(filepath.Join(h.Root, path))
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return path
}

// start runs a command until the test ends.
func start(t *testing.T, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

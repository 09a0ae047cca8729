package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/services"
)

// With idlePause the idle engine's cgroup is frozen — containerd and
// dockerd use no CPU —, while ddinit run, PID 1 (the control API, status,
// enter) are outside it and answer; the next docker call thaws it.
func TestEnginePausedWhenIdle(t *testing.T) {
	in, h := startPausing(t)
	ns := in.PidNS()
	in.ImportBusybox()
	// A container's cgroup is the engine's too (dockerd's cgroup parent is
	// under it): what it leaves is frozen and given back with the rest.
	in.Docker("run", "-d", "--name", "incgroup", "busybox:local", "sleep", "600")
	var inside int // its pid as dockerd sees it, in PID 1's pid namespace
	fmt.Sscan(in.Docker("inspect", "-f", "{{.State.Pid}}", "incgroup"), &inside)
	host := hostPid(t, in.Pid1(), inside)
	if !h.Contains(services.DefaultCgroupParent, host) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", host))
		t.Fatalf("the container's process (pid %d) is not in the engine's cgroup:\n%s", host, b)
	}
	in.Docker("rm", "-f", "incgroup")
	waitPaused(t, in, h)
	ctrd, dockerd := harness.FindComm(ns, "containerd"), harness.FindComm(ns, "dockerd")
	if len(ctrd) != 1 || len(dockerd) != 1 {
		t.Fatalf("containerd %v, dockerd %v", ctrd, dockerd)
	}
	for _, p := range []struct {
		name string
		pid  int
		in   bool
	}{{"containerd", ctrd[0], true}, {"dockerd", dockerd[0], true}, {"ddinit run", in.Pid(), false}, {"PID 1", in.Pid1(), false}, {"the test", os.Getpid(), false}} {
		if h.Contains(services.DefaultCgroupParent, p.pid) != p.in {
			t.Fatalf("%s (pid %d) in the engine's cgroup: %v, want %v", p.name, p.pid, !p.in, p.in)
		}
	}
	before := harness.CPUTicks(t, ctrd[0]) + harness.CPUTicks(t, dockerd[0])
	for range 10 {
		if code, _ := in.Get(http.MethodGet, "/status"); code != 200 {
			t.Fatal("/status while paused")
		}
		time.Sleep(time.Second)
	}
	if after := harness.CPUTicks(t, ctrd[0]) + harness.CPUTicks(t, dockerd[0]); after != before {
		t.Fatalf("containerd and dockerd used CPU while paused: %d ticks", after-before)
	}
	if out, err := in.CLI("status"); err != nil || !strings.Contains(out, "paused (idle)") {
		t.Fatalf("ddinit status while paused: %v\n%s", err, out)
	}
	if out, err := in.CLI("enter", "dockerd", "--", "cat", "/version-pack.json"); err != nil || !strings.Contains(out, "components") {
		t.Fatalf("ddinit enter while paused: %v %s", err, out)
	}
	start := time.Now()
	if out, err := in.DockerErr("ps"); err != nil {
		t.Fatalf("docker ps after the pause: %v %s", err, out)
	}
	t.Logf("docker ps through a paused engine took %s", time.Since(start).Round(time.Millisecond))
	if h.Frozen(services.DefaultCgroupParent) {
		t.Fatal("still frozen after the docker call")
	}
}

// On a data store whose disk is thin (a sparse file, loop-mounted, as a
// VHDX is to Windows), what containers wrote and removed goes back to the
// machine once the engine stops idle (trim).
func TestIdleStopTrimsTheDataStore(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (make deps installs e2fsprogs)", tool)
		}
	}
	dir, err := os.MkdirTemp("/var/tmp", "ddinit-thin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img, mnt := filepath.Join(dir, "data.img"), filepath.Join(dir, "data")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("truncate", "-s", "3G", img).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("no loop mount here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	used := func() int64 {
		var st syscall.Stat_t
		syscall.Stat(img, &st)
		return st.Blocks * 512
	}
	in := harness.Start(t, harness.Options{DataDir: mnt, Extra: []string{"--idle-stop", "2s"}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	in.ImportBusybox()
	in.Docker("run", "--rm", "-v", "big:/d", "busybox:local", "sh", "-c", "dd if=/dev/urandom of=/d/f bs=1M count=500 2>/dev/null; sync")
	full := used()
	in.Docker("volume", "rm", "big")
	in.WaitIdle(ns, 30*time.Second)
	harness.WaitUntil(t, 10*time.Second, "the trim", func() bool {
		for _, e := range in.LogEntries() {
			if strings.Contains(e["msg"].(string), "free blocks") {
				return true
			}
		}
		return false
	})
	after := used()
	t.Logf("the data disk's file: %d MB used with the volume, %d MB once idle", full>>20, after>>20)
	if full-after < 400<<20 {
		t.Fatalf("the data disk gave back %d MB, want at least 400", (full-after)>>20)
	}
}

// A shutdown while the engine is paused thaws it first and ends cleanly
// (a frozen containerd would never answer the stop).
func TestShutdownWhilePaused(t *testing.T) {
	in, h := startPausing(t)
	waitPaused(t, in, h)
	if code, took := in.Stop(); code != 0 {
		t.Fatalf("ddinit exited %d after SIGTERM while paused (%s)", code, took)
	} else {
		t.Logf("clean shutdown while paused took %s", took)
	}
	if h.Frozen(services.DefaultCgroupParent) {
		t.Fatal("the engine's cgroup was left frozen")
	}
}

// startPausing starts ddinit with the engine paused after 1 s unused, on
// a machine with a cgroup hierarchy (skipped, saying so, without one).
func startPausing(t *testing.T) (*harness.Instance, cgroup.Hierarchy) {
	t.Helper()
	harness.RequireEnvironment(t)
	h, err := cgroup.Detect("/sys/fs/cgroup")
	if err != nil {
		t.Skipf("no cgroup hierarchy here: %v", err)
	}
	in := harness.Start(t, harness.Options{Extra: []string{"--idle-pause", "1s"}})
	in.WaitPing(60 * time.Second)
	return in, h
}

// waitPaused waits until the engine's cgroup is frozen and /ping says so.
func waitPaused(t *testing.T, in *harness.Instance, h cgroup.Hierarchy) {
	t.Helper()
	harness.WaitUntil(t, 20*time.Second, "the engine to pause", func() bool {
		code, body := in.Get(http.MethodGet, "/ping")
		return code == 200 && strings.Contains(body, "paused (idle)") && h.Frozen(services.DefaultCgroupParent)
	})
}

// hostPid is the pid, as this test sees it, of the process that is pid
// inside in the pid namespace whose first process is pid1 (a container's
// process, as dockerd reports it).
func hostPid(t *testing.T, pid1, inside int) int {
	t.Helper()
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	// The level of that namespace in NSpid: one past the test's own.
	self, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid1))
	level := 0
	for _, line := range strings.Split(string(self), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			level = len(strings.Fields(v)) - 1
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(line, "NSpid:")
			if f := strings.Fields(v); ok && len(f) > level && f[level] == fmt.Sprint(inside) {
				var host int
				fmt.Sscan(f[0], &host)
				return host
			}
		}
	}
	t.Fatalf("no process is pid %d in %s", inside, ns)
	return 0
}

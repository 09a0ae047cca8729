package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"golang.org/x/sys/unix"
)

// Boot, run a container that writes into a named volume, stop cleanly,
// leave nothing behind, boot again on the same data store, find the file.
func TestBootRunStopBootAgain(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	// containerd reads the configuration ddinit writes as its own format:
	// an older one makes containerd 2.4 warn at every start.
	ctrdLog, err := os.ReadFile(filepath.Join(in.DataDir, "log", "containerd.log"))
	if err != nil || !strings.Contains(string(ctrdLog), "containerd successfully booted") {
		t.Fatalf("containerd's log (%v) says no boot:\n%s", err, ctrdLog)
	}
	if strings.Contains(string(ctrdLog), "Configuration migrated") {
		t.Errorf("containerd migrated ddinit's configuration at its start")
	}
	in.ImportBusybox()
	out := in.Docker("run", "--rm", "-v", "e2evol:/data", "busybox:local", "sh", "-c", "echo persisted-$((6*7)) > /data/file; sync; cat /data/file")
	if strings.TrimSpace(out) != "persisted-42" {
		t.Fatalf("container printed %q", out)
	}
	code, took := in.Stop()
	if code != 0 {
		t.Fatalf("ddinit exited %d after SIGTERM", code)
	}
	t.Logf("clean shutdown took %s", took)
	// No goroutine of ddinit run outlives its steps: the count after every
	// undo is the count before PID 1 started.
	var left, before float64 = -1, -1
	for _, e := range in.LogEntries() {
		if e["msg"] == "every launch step undone" {
			left, _ = e["goroutines"].(float64)
			before, _ = e["before"].(float64)
		}
	}
	if left < 0 || left > before {
		t.Fatalf("goroutines of ddinit run after its steps were undone: %v, before PID 1: %v", left, before)
	}
	t.Logf("goroutines of ddinit run: %v before PID 1, %v once its steps were undone", before, left)
	if m := harness.HostMounts(t, in.DataDir, in.RunDir); len(m) > 0 {
		t.Fatalf("mounts left in the host's mount table:\n%s", strings.Join(m, "\n"))
	}
	if left := harness.InNS(ns); len(left) > 0 {
		t.Fatalf("processes left from the namespace: %+v", left)
	}
	if _, err := os.Stat(in.Sock); err == nil {
		t.Fatal("the exposed socket file was left behind")
	}
	// The distro's /dev is untouched: runc setting up the dockerd service
	// works on the namespace's own /dev, not the machine's devtmpfs.
	if st, err := os.Lstat("/dev/ptmx"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("the distro's /dev/ptmx was changed: %v %v", st.Mode(), err)
	}

	again := harness.Start(t, harness.Options{DataDir: in.DataDir})
	again.WaitPing(60 * time.Second)
	out = again.Docker("run", "--rm", "-v", "e2evol:/data", "busybox:local", "cat", "/data/file")
	if strings.TrimSpace(out) != "persisted-42" {
		t.Fatalf("after a reboot the volume holds %q", out)
	}
	var hits int
	for _, e := range again.LogEntries() {
		if e["msg"] == "image ready" && e["cacheHit"] == true {
			hits++
		}
	}
	if hits < 2 {
		t.Errorf("the second boot did not hit the image cache for both images (%d hits)", hits)
	}
	if code, _ := again.Stop(); code != 0 {
		t.Fatalf("second run exited %d", code)
	}
}

// dockerd killed once, then twenty times in a row; a service that always
// exits at once; containerd killed.
func TestSupervisionRestartsAndBacksOff(t *testing.T) {
	harness.RequireEnvironment(t)
	pack := harness.CustomPack(t, func(root string) {
		harness.AddService(t, root, "crasher", []string{"/bin/sh", "-c", "echo boom: config missing >&2; exit 3"}, map[string]string{"io.ddinit.service.required": "false"})
	})
	in := harness.Start(t, harness.Options{Pack: pack, Config: map[string]any{
		"restart": map[string]any{"initial": "10ms", "max": "320ms", "resetAfter": "30s", "crashLoop": 5},
	}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()

	// One kill: back within seconds.
	first := onlyComm(t, ns, "dockerd")
	syscall.Kill(first, syscall.SIGKILL)
	waitGone(t, first)
	in.WaitPing(30 * time.Second)

	// Twenty kills in a row, each as soon as the new dockerd exists.
	last := 0
	for i := 0; i < 20; i++ {
		pid := waitNewComm(t, ns, "dockerd", last, 30*time.Second)
		syscall.Kill(pid, syscall.SIGKILL)
		last = pid
	}
	// The last one gone first: a ping right after kill(2) can still be
	// answered by the dockerd it killed, before its exit is logged.
	waitGone(t, last)
	in.WaitPing(60 * time.Second)
	var delays []int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		delays = delays[:0]
		for _, e := range in.LogEntries() {
			if e["service"] == "dockerd" && (e["msg"] == "service exited; restarting" || e["msg"] == "service is failing") {
				delays = append(delays, int(e["backoffMs"].(float64)))
			}
		}
		if len(delays) >= 21 || time.Now().After(deadline) {
			break
		}
	}
	if len(delays) < 21 {
		t.Fatalf("the log shows %d dockerd restarts, want at least 21: %v", len(delays), delays)
	}
	if !slices.IsSorted(delays) || delays[len(delays)-1] != 320 || delays[0] >= 320 {
		t.Fatalf("backoff does not grow to its cap in the log: %v", delays)
	}

	// The crash-looping service is reported failed with its output, and
	// dockerd kept running all along.
	var failing map[string]any
	for _, e := range in.LogEntries() {
		if e["service"] == "crasher" && e["msg"] == "service is failing" {
			failing = e
		}
	}
	if failing == nil {
		t.Fatal("the crash-looping service was never reported failed")
	}
	if out, _ := failing["lastOutput"].(string); !strings.Contains(out, "boom: config missing") || failing["exitCode"] != float64(3) {
		t.Fatalf("failure report lacks the last output or exit code: %v", failing)
	}
	if err := harness.Ping(in.Sock); err != nil {
		t.Fatalf("dockerd stopped answering while another service failed: %v", err)
	}

	// containerd killed: it and its services come back.
	ctrd := onlyComm(t, ns, "containerd")
	dockerdBefore := onlyComm(t, ns, "dockerd")
	syscall.Kill(ctrd, syscall.SIGKILL)
	waitGone(t, ctrd)
	waitNewComm(t, ns, "containerd", ctrd, 30*time.Second)
	waitNewComm(t, ns, "dockerd", dockerdBefore, 30*time.Second)
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	if out := in.Docker("run", "--rm", "busybox:local", "echo", "after containerd died"); !strings.Contains(out, "after containerd died") {
		t.Fatalf("container output %q", out)
	}
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// onlyComm is the one process named comm in pid namespace ns.
func onlyComm(t *testing.T, ns, comm string) int {
	t.Helper()
	pids := harness.FindComm(ns, comm)
	if len(pids) != 1 {
		t.Fatalf("want one %s in the namespace, found %v", comm, pids)
	}
	return pids[0]
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(b), ") Z ") {
			return
		}
	}
	t.Fatalf("pid %d did not die", pid)
}

func waitNewComm(t *testing.T, ns, comm string, not int, timeout time.Duration) int {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, p := range harness.InNS(ns) {
			if p.Comm == comm && p.Pid != not && p.State != "Z" {
				return p.Pid
			}
		}
	}
	t.Fatalf("no new %s within %s", comm, timeout)
	return 0
}

// An orphan double-forked inside the namespace is reaped by PID 1.
func TestOrphansAreReaped(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	pid1 := in.Pid1()
	// The subshell exits at once; its sleep is orphaned inside the
	// namespace, reparented to PID 1, and must be reaped when it exits.
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(pid1), "-p", "-m", "-r", "-w", "/bin/sh", "-c", "(exec sleep 1.5 </dev/null >/dev/null 2>&1 &) ; (exec sleep 1.5 </dev/null >/dev/null 2>&1 &) ; exit 0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v %s", err, out)
	}
	var orphans []harness.Process
	for deadline := time.Now().Add(time.Second); len(orphans) < 2 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		orphans = orphans[:0]
		for _, p := range harness.InNS(ns) {
			if p.Comm == "sleep" {
				orphans = append(orphans, p)
			}
		}
	}
	if len(orphans) != 2 {
		t.Fatalf("want two orphaned sleeps, found %+v", orphans)
	}
	for _, o := range orphans {
		if o.PPid != pid1 {
			t.Fatalf("orphan %d has parent %d, not PID 1 (%d)", o.Pid, o.PPid, pid1)
		}
	}
	time.Sleep(2500 * time.Millisecond)
	for _, p := range harness.InNS(ns) {
		if p.Comm == "sleep" || p.State == "Z" {
			t.Fatalf("zombie left in the namespace: %+v", p)
		}
	}
}

// Boot failures: one clear line naming the cause, non-zero, no mounts.
func TestBootFailuresAreClear(t *testing.T) {
	harness.RequireEnvironment(t)
	wrongSidecar := filepath.Join(t.TempDir(), "docker.iso")
	if err := os.Symlink(harness.PackISO, wrongSidecar); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(wrongSidecar+".sha256", []byte(strings.Repeat("ab", 32)+"  docker.iso\n"), 0o644)

	readOnly := t.TempDir()
	if err := unix.Mount("tmpfs", readOnly, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(readOnly, unix.MNT_DETACH) })

	badSpec := harness.CustomPack(t, func(root string) {
		os.WriteFile(filepath.Join(root, "containers/services/dockerd/config.json"), []byte(`{"ociVersion": "1.0.2", "process": {`), 0o644)
	})

	cases := []struct {
		name string
		o    harness.Options
		want []string
	}{
		{"missing image", harness.Options{Pack: "/nonexistent/docker.iso"}, []string{"/nonexistent/docker.iso"}},
		{"wrong digest", harness.Options{Pack: wrongSidecar}, []string{"sha256 mismatch", wrongSidecar, strings.Repeat("ab", 32)}},
		{"unwritable data dir", harness.Options{DataDir: readOnly}, []string{readOnly, "not writable", "read-only"}},
		{"invalid service definition", harness.Options{Pack: badSpec}, []string{"containers/services/dockerd/config.json", "not a valid OCI runtime spec"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := harness.Start(t, c.o)
			code := in.Exited(60 * time.Second)
			if code == 0 {
				t.Fatal("ddinit exited 0")
			}
			lines := strings.Split(strings.TrimSpace(in.Output()), "\n")
			lastLine := lines[len(lines)-1]
			if !strings.HasPrefix(lastLine, "ddinit: boot failed: ") {
				t.Fatalf("last line %q is not the failure", lastLine)
			}
			for _, w := range c.want {
				if !strings.Contains(lastLine, w) {
					t.Errorf("failure line %q does not name %q", lastLine, w)
				}
			}
			// The read-only data dir is the test's own mount: look for
			// anything ddinit would have left inside it or the run dir.
			if m := harness.HostMounts(t, in.RunDir, in.DataDir+"/"); len(m) > 0 {
				t.Fatalf("mounts left:\n%s", strings.Join(m, "\n"))
			}
		})
	}
}

// Boot after boot, each used as the frontend and a developer would once
// it has settled: a container runs, health and docker are polled for a
// few seconds, then a clean stop. No boot may crash, whatever the build
// (make test runs this with the dynamically linked and PIE builds too).
func TestRepeatedBootsStayUp(t *testing.T) {
	harness.RequireEnvironment(t)
	boots := 3
	if v := os.Getenv("DDINIT_BOOT_LOOP"); v != "" {
		fmt.Sscan(v, &boots)
	}
	data, _ := harness.NewDirs(t)
	for i := range boots {
		in := harness.Start(t, harness.Options{DataDir: data})
		in.WaitPing(60 * time.Second)
		time.Sleep(1500 * time.Millisecond) // past the moment the boot settles
		if i == 0 {
			in.ImportBusybox()
		}
		if out := in.Docker("run", "--rm", "busybox:local", "echo", "boot", strconv.Itoa(i)); !strings.Contains(out, "boot "+strconv.Itoa(i)) {
			t.Fatalf("boot %d: container printed %q", i, out)
		}
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if code, body := in.Get(http.MethodGet, "/ping"); code != http.StatusOK {
				t.Fatalf("boot %d: /ping %d %s", i, code, body)
			}
			if err := harness.Ping(in.Sock); err != nil {
				t.Fatalf("boot %d: docker _ping: %v", i, err)
			}
		}
		select {
		case <-in.Done():
			t.Fatalf("boot %d: ddinit died on its own: %v\n%s", i, in.Err(), harness.Tail(in.Output(), 20))
		default:
		}
		if code, _ := in.Stop(); code != 0 {
			t.Fatalf("boot %d: exit %d\n%s", i, code, harness.Tail(in.Output(), 20))
		}
		for _, bad := range []string{"SIGSEGV", "panic:", "fatal error:", "DATA RACE"} {
			if strings.Contains(in.Output(), bad) {
				t.Fatalf("boot %d: %s in ddinit's output:\n%s", i, bad, harness.Tail(in.Output(), 40))
			}
		}
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// A dockerd or containerd that stops answering (SIGSTOP: its sockets
// still accept connections) makes /ping 503 naming it, is killed after
// the configured silence and restarted, and status says why.
func TestHungServicesAreKilledAndRestarted(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Config: map[string]any{
		"liveness": map[string]any{"period": "1s", "timeout": "500ms", "killAfter": "6s"},
		"restart":  map[string]any{"initial": "50ms", "max": "1s"},
	}})
	in.WaitPing(60 * time.Second)
	// Ready as the supervisor sees it too: its liveness checks begin only
	// then (docker may answer _ping a moment before its readiness check).
	in.WaitHealthy(30 * time.Second)
	ns := in.PidNS()

	dockerd := onlyComm(t, ns, "dockerd")
	syscall.Kill(dockerd, syscall.SIGSTOP)
	body, took := in.WaitPing503(10*time.Second, "dockerd", "not answering for")
	t.Logf("dockerd stopped: /ping 503 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
	if harness.Ping(in.Sock) == nil {
		t.Fatal("a stopped dockerd answered _ping: the test proves nothing")
	}
	waitGone(t, dockerd)
	in.WaitPing(60 * time.Second)
	in.WaitHealthy(30 * time.Second)
	st := in.Status()
	d := serviceStatus(st, "dockerd")
	if d.Restarts < 1 || d.LastExit == nil || d.LastExit.Signal != "SIGKILL" || !strings.HasPrefix(d.LastExit.Cause, "not answering for") {
		t.Fatalf("status does not say dockerd was killed for not answering: %+v %+v", d, d.LastExit)
	}
	out, err := in.CLI("status")
	if err != nil || !regexpLine(out, "dockerd", "SIGKILL") || !strings.Contains(out, "(not answering for") {
		t.Fatalf("ddinit status does not show why dockerd was restarted: %v\n%s", err, out)
	}

	ctrd := onlyComm(t, ns, "containerd")
	syscall.Kill(ctrd, syscall.SIGSTOP)
	body, took = in.WaitPing503(10*time.Second, "containerd", "not answering for")
	t.Logf("containerd stopped: /ping 503 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
	waitGone(t, ctrd)
	in.WaitHealthy(60 * time.Second)
	in.WaitPing(30 * time.Second)
	st = in.Status()
	if c := st.Containerd; c.Restarts != 1 || c.LastExit == nil || !strings.HasPrefix(c.LastExit.Cause, "not answering for") || c.State != "running" {
		t.Fatalf("status does not say containerd was killed for not answering: %+v %+v", c, c.LastExit)
	}
	in.ImportBusybox()
	if out := in.Docker("run", "--rm", "busybox:local", "echo", "after the hang"); !strings.Contains(out, "after the hang") {
		t.Fatalf("container output %q", out)
	}
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A containerd that dies at once on every start is reported as
// crash-looping, restarted with growing delays, and once it can start
// again everything comes back.
func TestContainerdCrashLoop(t *testing.T) {
	harness.RequireEnvironment(t)
	const refuse = "/run/ddinit-test-refuse-containerd"
	pack := harness.CustomPack(t, func(root string) {
		bin := filepath.Join(root, "usr/bin/containerd")
		if err := os.Rename(bin, bin+".real"); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nif [ -e " + refuse + " ]; then echo 'containerd: refusing to start (test)' >&2; exit 3; fi\nexec /usr/bin/containerd.real \"$@\"\n"
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	in := harness.Start(t, harness.Options{Pack: pack, Config: map[string]any{
		"restart": map[string]any{"initial": "20ms", "max": "640ms", "resetAfter": "1m", "crashLoop": 4},
	}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	pid1 := strconv.Itoa(in.Pid1())
	if err := os.WriteFile("/proc/"+pid1+"/root"+refuse, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(onlyComm(t, ns, "containerd.real"), syscall.SIGKILL)
	body, _ := in.WaitPing503(20*time.Second, "containerd is failing", "runs in a row ended")
	t.Logf("crash loop: %s", strings.TrimSpace(body))
	// The status turns before the line saying so reaches the log file:
	// the delays are read until the fourth is there.
	var delays []int
	readDelays := func() bool {
		delays = delays[:0]
		for _, e := range in.LogEntries() {
			if e["service"] == "containerd" && (e["msg"] == "containerd died; restarting it and then its services" || e["msg"] == "containerd is failing") {
				delays = append(delays, int(e["backoffMs"].(float64)))
			}
		}
		return len(delays) >= 4
	}
	within(t, 10*time.Second, "the fourth restart in ddinit's log", readDelays)
	if !slices.IsSorted(delays) || delays[0] >= delays[len(delays)-1] {
		t.Fatalf("containerd's restart delays do not grow: %v", delays)
	}
	out, _ := in.CLI("status")
	if !strings.Contains(out, "containerd: failed") || !strings.Contains(out, "refusing to start") {
		t.Fatalf("ddinit status does not show containerd failing with its output:\n%s", out)
	}
	os.Remove("/proc/" + pid1 + "/root" + refuse)
	in.WaitHealthy(60 * time.Second)
	in.WaitPing(30 * time.Second)
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

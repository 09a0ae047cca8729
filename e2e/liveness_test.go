package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitPing503 waits until /ping is 503 with a reason holding every one
// of words, and returns the body and how long it took.
func (in *instance) waitPing503(timeout time.Duration, words ...string) (string, time.Duration) {
	in.t.Helper()
	start := time.Now()
	var body string
	for time.Since(start) < timeout {
		var code int
		code, body = in.get(http.MethodGet, "/ping")
		if code == http.StatusServiceUnavailable {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(body, w)
			}
			if ok {
				return body, time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	in.t.Fatalf("/ping did not turn 503 naming %v within %s (last: %q)", words, timeout, body)
	return "", 0
}

// waitHealthy waits until /ping is 200.
func (in *instance) waitHealthy(timeout time.Duration) {
	in.t.Helper()
	var body string
	for start := time.Now(); time.Since(start) < timeout; time.Sleep(50 * time.Millisecond) {
		var code int
		if code, body = in.get(http.MethodGet, "/ping"); code == http.StatusOK {
			return
		}
	}
	in.t.Fatalf("not healthy within %s: %s", timeout, body)
}

// A dockerd or containerd that stops answering (SIGSTOP: its sockets
// still accept connections) makes /ping 503 naming it, is killed after
// the configured silence and restarted, and status says why.
func TestHungServicesAreKilledAndRestarted(t *testing.T) {
	requireEnvironment(t)
	in := start(t, options{config: map[string]any{
		"liveness": map[string]any{"period": "1s", "timeout": "500ms", "killAfter": "6s"},
		"restart":  map[string]any{"initial": "50ms", "max": "1s"},
	}})
	in.waitPing(60 * time.Second)
	ns := in.pidNS()

	dockerd := onlyComm(t, ns, "dockerd")
	syscall.Kill(dockerd, syscall.SIGSTOP)
	body, took := in.waitPing503(10*time.Second, "dockerd", "not answering for")
	t.Logf("dockerd stopped: /ping 503 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
	if ping(in.sock) == nil {
		t.Fatal("a stopped dockerd answered _ping: the test proves nothing")
	}
	waitGone(t, dockerd)
	in.waitPing(60 * time.Second)
	in.waitHealthy(30 * time.Second)
	st := in.status()
	d := serviceStatus(st, "dockerd")
	if d.Restarts < 1 || d.LastExit == nil || d.LastExit.Signal != "SIGKILL" || !strings.HasPrefix(d.LastExit.Cause, "not answering for") {
		t.Fatalf("status does not say dockerd was killed for not answering: %+v %+v", d, d.LastExit)
	}
	out, err := in.cli("status")
	if err != nil || !regexpLine(out, "dockerd", "SIGKILL") || !strings.Contains(out, "(not answering for") {
		t.Fatalf("ddinit status does not show why dockerd was restarted: %v\n%s", err, out)
	}

	ctrd := onlyComm(t, ns, "containerd")
	syscall.Kill(ctrd, syscall.SIGSTOP)
	body, took = in.waitPing503(10*time.Second, "containerd", "not answering for")
	t.Logf("containerd stopped: /ping 503 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
	waitGone(t, ctrd)
	in.waitHealthy(60 * time.Second)
	in.waitPing(30 * time.Second)
	st = in.status()
	if c := st.Containerd; c.Restarts != 1 || c.LastExit == nil || !strings.HasPrefix(c.LastExit.Cause, "not answering for") || c.State != "running" {
		t.Fatalf("status does not say containerd was killed for not answering: %+v %+v", c, c.LastExit)
	}
	in.importBusybox()
	if out := in.docker("run", "--rm", "busybox:local", "echo", "after the hang"); !strings.Contains(out, "after the hang") {
		t.Fatalf("container output %q", out)
	}
	if code, _ := in.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// A containerd that dies at once on every start is reported as
// crash-looping, restarted with growing delays, and once it can start
// again everything comes back.
func TestContainerdCrashLoop(t *testing.T) {
	requireEnvironment(t)
	const refuse = "/run/ddinit-test-refuse-containerd"
	pack := customPack(t, func(root string) {
		bin := filepath.Join(root, "usr/bin/containerd")
		if err := os.Rename(bin, bin+".real"); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\nif [ -e " + refuse + " ]; then echo 'containerd: refusing to start (test)' >&2; exit 3; fi\nexec /usr/bin/containerd.real \"$@\"\n"
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	in := start(t, options{pack: pack, config: map[string]any{
		"restart": map[string]any{"initial": "20ms", "max": "640ms", "resetAfter": "1m", "crashLoop": 4},
	}})
	in.waitPing(60 * time.Second)
	ns := in.pidNS()
	pid1 := strconv.Itoa(in.pid1())
	if err := os.WriteFile("/proc/"+pid1+"/root"+refuse, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(onlyComm(t, ns, "containerd.real"), syscall.SIGKILL)
	body, _ := in.waitPing503(20*time.Second, "containerd is failing", "runs in a row ended")
	t.Logf("crash loop: %s", strings.TrimSpace(body))
	var delays []int
	for _, e := range in.logEntries() {
		if e["service"] == "containerd" && (e["msg"] == "containerd died; restarting it and then its services" || e["msg"] == "containerd is failing") {
			delays = append(delays, int(e["backoffMs"].(float64)))
		}
	}
	if len(delays) < 4 || !slices.IsSorted(delays) || delays[0] >= delays[len(delays)-1] {
		t.Fatalf("containerd's restart delays do not grow: %v", delays)
	}
	out, _ := in.cli("status")
	if !strings.Contains(out, "containerd: failed") || !strings.Contains(out, "refusing to start") {
		t.Fatalf("ddinit status does not show containerd failing with its output:\n%s", out)
	}
	os.Remove("/proc/" + pid1 + "/root" + refuse)
	in.waitHealthy(60 * time.Second)
	in.waitPing(30 * time.Second)
	if code, _ := in.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

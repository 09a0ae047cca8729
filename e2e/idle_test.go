package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// With a short idleStop the engine stops once the last container exited
// and the clients went away, and the next client wakes it: its first
// command works, the images and volumes are there, and 20 first
// connections at once all succeed.
func TestEngineStopsWhenIdleAndWakes(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Extra: []string{"--idle-stop", "2s"}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	in.ImportBusybox()
	in.Docker("run", "--rm", "-v", "idlevol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f")
	in.WaitIdle(ns, 20*time.Second)
	var st struct{ State, Reason string }
	if _, body := in.Get(http.MethodGet, "/status"); !strings.Contains(body, `"state": "idle"`) || !strings.Contains(body, "stopped (idle) since") {
		t.Fatalf("/status while idle: %s %+v", body[:min(len(body), 300)], st)
	}
	if out, err := in.CLI("status"); err != nil || !strings.Contains(out, "stopped (idle) since") {
		t.Fatalf("ddinit status while idle: %v\n%s", err, out)
	}

	start := time.Now()
	if out := in.Docker("run", "--rm", "-v", "idlevol:/d", "busybox:local", "sh", "-c", "echo hi; cat /d/f"); out != "hi\nkept\n" {
		t.Fatalf("the first command after the idle stop: %q", out)
	}
	t.Logf("docker run through a stopped engine took %s", time.Since(start).Round(time.Millisecond))
	if out := in.Docker("images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, "busybox:local") {
		t.Fatalf("images after the wake: %q", out)
	}
	if out := in.Docker("volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "idlevol") {
		t.Fatalf("volumes after the wake: %q", out)
	}
	// The network dockerd left was cleared at the stop and made again at
	// the wake: a published port answers.
	in.Docker("run", "-d", "--name", "afterwake", "-p", "127.0.0.1:18191:80", "busybox:local", "sh", "-c", "mkdir /www && echo woke-web > /www/index.html && exec httpd -f -p 80 -h /www")
	answers(t, "127.0.0.1:18191", "woke-web", 20*time.Second)
	in.Docker("rm", "-f", "afterwake")
	// The wake has a timeline of its own, down to dockerd's API.
	var woke control.Status
	_, statusBody := in.Get("GET", "/status")
	json.Unmarshal([]byte(statusBody), &woke)
	var wake []string
	for _, s := range woke.WakeTimeline {
		wake = append(wake, s.Event)
	}
	for _, want := range []string{"wake asked (by ddinit run)", "containerd answering", "dockerd: task started", "dockerd: API listening (its log)", "engine woken (ddinit run told)"} {
		if !slices.Contains(wake, want) {
			t.Fatalf("the wake's timeline lacks %q: %q", want, wake)
		}
	}

	in.WaitIdle(ns, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := in.DockerErr("ps", "-a"); err != nil {
				errs <- fmt.Errorf("first connection %d: %v %s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// openEvents opens `docker events` on the exposed socket: a client that
// keeps the engine up while it is open.
func openEvents(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: docker\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Fatalf("docker events: %v", err)
	}
	return c
}

// An open events stream and a running container keep the engine up past
// idleStop; two distros' proxies, with their followers, do not: the engine
// stops and stays stopped, and a docker ps through a proxy wakes it. A
// client that marks its stream as ddinit's own, through a distro's proxy,
// is counted as any client: the engine stays up under it.
func TestEngineKeptUpOnlyByUse(t *testing.T) {
	harness.RequireEnvironment(t)
	shared := newShared(t)
	in := harness.Start(t, harness.Options{Extra: []string{"--idle-stop", "2s", "--wsl-shared", shared}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	in.ImportBusybox()

	events := openEvents(t, in.Sock)
	time.Sleep(5 * time.Second)
	if !in.EngineUp(ns) {
		t.Fatal("the engine stopped while docker events was open")
	}
	events.Close()
	in.Docker("run", "-d", "--name", "runner", "busybox:local", "sleep", "600")
	time.Sleep(5 * time.Second)
	if !in.EngineUp(ns) {
		t.Fatal("the engine stopped while a container ran")
	}
	in.Docker("rm", "-f", "runner")

	distro := newUserDistro(t, "Ubuntu")
	distro.startProxy(shared)
	newUserDistro(t, "Debian").startProxy(shared)
	in.WaitIdle(ns, 20*time.Second)
	for range 6 * 2 { // 3 × idleStop, looked at every half second
		if in.EngineUp(ns) {
			t.Fatal("the engine woke with only a distro's proxy running")
		}
		time.Sleep(500 * time.Millisecond)
	}
	if out := distro.sh("docker ps -a --format '{{.Names}}'"); strings.Contains(out, "runner") {
		t.Fatalf("docker ps through the distro's proxy: %q", out)
	}
	if !in.EngineUp(ns) {
		t.Fatal("docker ps through the distro's proxy did not wake the engine")
	}

	// A client that says it is ddinit's own is not believed.
	forged := distro.command("curl", "-sN", "--unix-socket", "/run/docker.sock", "-H", "X-Ddinit-Internal: 1", "http://d/events")
	if err := forged.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { forged.Process.Kill(); forged.Wait() }()
	time.Sleep(5 * time.Second) // more than twice idleStop
	if !in.EngineUp(ns) {
		t.Fatal("the engine stopped under a stream whose client sent the internal marker through a distro's proxy")
	}
	forged.Process.Kill()
	forged.Wait()
	in.WaitIdle(ns, 20*time.Second)
}

// A wake whose dockerd cannot start (its daemon.json broken while the
// engine was stopped) answers 503 with the cause, /ping says it; the next
// client, once it is mended, wakes it.
func TestWakeThatFailsIs503AndRetried(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Extra: []string{"--idle-stop", "2s"}})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	in.ImportBusybox()
	in.WaitIdle(ns, 20*time.Second)
	daemonJSON := filepath.Join(in.DataDir, "etc/docker/daemon.json")
	good, err := os.ReadFile(daemonJSON)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(daemonJSON, []byte(`{"bogus-option": true}`), 0o644)
	out, err := in.DockerErr("ps")
	if err == nil || !strings.Contains(out, "waking the docker engine failed") || !strings.Contains(out, "bogus-option") {
		t.Fatalf("docker ps with a dockerd that cannot start: %v\n%s", err, out)
	}
	if code, body := in.Get(http.MethodGet, "/ping"); code != 503 || !strings.Contains(body, "bogus-option") {
		t.Fatalf("/ping after the failed wake: %d %s", code, body)
	}
	os.WriteFile(daemonJSON, good, 0o644)
	if out, err := in.DockerErr("ps"); err != nil {
		t.Fatalf("the next client, daemon.json mended: %v\n%s", err, out)
	}
	if code, _ := in.Get(http.MethodGet, "/ping"); code != 200 {
		t.Fatalf("/ping after the wake: %d", code)
	}
}

// idleStop set through the settings (no flag, no config) takes effect at
// once, with nothing restarted.
func TestIdleStopFromTheSettings(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	ns := in.PidNS()
	if code, body := in.PutSettings(`{"generation": 0, "idleStop": "2s"}`); code != 200 {
		t.Fatalf("idleStop in the settings: %d %s", code, body)
	}
	in.WaitIdle(ns, 20*time.Second)
	if out, err := in.DockerErr("ps"); err != nil {
		t.Fatalf("docker ps after the idle stop: %v %s", err, out)
	}
}

// iptablesNow is the namespace's iptables and ip6tables rules, as the
// pack's own tools dump them, without what changes by itself (counters,
// the dump's dated comments), sorted: dockerd makes its networks' rules
// again in no set order, and what is looked for is a rule too many (stale,
// or twice) or missing.
func iptablesNow(t *testing.T, in *harness.Instance) string {
	t.Helper()
	var lines []string
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("nsenter", "-t", fmt.Sprint(in.Pid1()), "-m", "-n", tool).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in the namespace: %v\n%s", tool, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if i := strings.Index(line, " ["); strings.HasPrefix(line, ":") && i >= 0 {
				line = line[:i]
			}
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// An idle stop and the wake after it leave the engine's network as it
// was: no chain or rule of dockerd's stale or twice (dockerd 28 makes
// more of them than 20.10: DOCKER-FORWARD, DOCKER-BRIDGE, DOCKER-CT, the
// raw table's drops per endpoint), whichever pack runs; and neither the
// idle stop nor the shutdown leaves dockerd waiting on ddinit's own event
// streams.
func TestIdleStopAndWakeLeaveNothingStale(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, pack := range []string{harness.PackISO, harness.Pack2010ISO} {
		t.Run(filepath.Base(pack), func(t *testing.T) {
			in := harness.Start(t, harness.Options{Pack: pack, Extra: []string{"--idle-stop", "3s"}})
			in.WaitPing(60 * time.Second)
			ns := in.PidNS()
			in.ImportBusybox()
			// A network and a published port make rules; gone, theirs go.
			in.Docker("network", "create", "stalenet")
			in.Docker("run", "-d", "--name", "stale", "--network", "stalenet", "-p", "18532:80", "busybox:local", "sleep", "600")
			in.Docker("rm", "-f", "stale")
			before := iptablesNow(t, in)
			if !strings.Contains(before, ":DOCKER") {
				t.Fatalf("no chain of dockerd's in the namespace:\n%s", before)
			}
			in.WaitIdle(ns, 30*time.Second)
			// Stopped, the namespace is as a boot gives it to dockerd:
			// nothing of dockerd's left (its next start would delete it
			// rule by rule), DOCKER-USER kept.
			for _, line := range strings.Split(iptablesNow(t, in), "\n") {
				if f := strings.Fields(line); len(f) > 0 && dockerdsOwn(f) {
					t.Fatalf("dockerd's rules left while the engine is stopped: %q", line)
				}
			}
			in.Docker("ps")
			after := iptablesNow(t, in)
			if after != before {
				t.Fatalf("the rules after an idle stop and a wake differ:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			// Neither the idle stop nor the shutdown left dockerd waiting
			// on a request of ddinit's own (its event streams) until its
			// grace ran out (dockerd 28 gives open requests 5 s).
			in.Stop()
			logs, _ := filepath.Glob(filepath.Join(in.DataDir, "log", "dockerd.log*"))
			for _, f := range logs {
				if b, _ := os.ReadFile(f); strings.Contains(string(b), "Error shutting down http server") {
					t.Fatalf("dockerd waited on an open request at its stop (%s):\n%s", f, harness.Tail(string(b), 20))
				}
			}
		})
	}
}

// dockerdsOwn reports a line of an iptables dump (split in fields) that
// is dockerd's: one of its chains (every DOCKER… but DOCKER-USER), a rule
// in or jumping to one, a rule naming one of its bridges. It is the
// test's own reading, written apart from network.WithoutDockerRules on
// purpose: the test checks that code's outcome and must not share its
// mistakes.
func dockerdsOwn(f []string) bool {
	own := func(name string) bool {
		return name != "DOCKER-USER" && (name == "DOCKER" || strings.HasPrefix(name, "DOCKER-"))
	}
	if strings.HasPrefix(f[0], ":") {
		return own(f[0][1:])
	}
	if f[0] != "-A" || len(f) < 2 {
		return false
	}
	if own(f[1]) {
		return true
	}
	for i := 2; i+1 < len(f); i++ {
		switch f[i] {
		case "-j", "-g":
			if own(f[i+1]) {
				return true
			}
		case "-i", "-o":
			if f[i+1] == "docker0" || strings.HasPrefix(f[i+1], "br-") {
				return true
			}
		}
	}
	return false
}

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/ddinit/ddinit/internal/testutil"
	"github.com/ddinit/ddinit/iso9660"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/mounts"
)

// Paths of the artifacts `make test` builds before running the suite.
var (
	repoRoot, _ = filepath.Abs("..")
	binary      = ddinitBinary()
	baseISO     = filepath.Join(repoRoot, "build", "docker-desktop.iso")
	packISO     = filepath.Join(repoRoot, "build", "docker.iso")
)

// ddinitBinary is bin/ddinit (make build's static binary), or the build
// named by DDINIT_BINARY: make test also boots a plain `go build`
// (dynamically linked), a PIE and a race-detector build.
func ddinitBinary() string {
	if b := os.Getenv("DDINIT_BINARY"); b != "" {
		abs, _ := filepath.Abs(b)
		return abs
	}
	return filepath.Join(repoRoot, "bin", "ddinit")
}

func requireEnvironment(t *testing.T) {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, p := range []string{binary, baseISO, packISO} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: run `make build isos` (make test does)", p)
		}
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is missing (make deps installs docker.io)")
	}
}

// instance is one `ddinit run` under test.
type instance struct {
	t       *testing.T
	dataDir string
	runDir  string
	sock    string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{}
	err     error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type options struct {
	dataDir  string
	base     string
	pack     string
	config   map[string]any
	extra    []string
	noExpose bool
	// netns, when set, is the network namespace (a path) ddinit run is
	// started in: a test's own "distro" network.
	netns string
}

// newDirs makes a data dir and a short run dir (unix socket paths are
// limited to 107 bytes).
func newDirs(t *testing.T) (string, string) {
	data := t.TempDir()
	run, err := os.MkdirTemp("/tmp", "ddinit-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	return data, run
}

func start(t *testing.T, o options) *instance {
	t.Helper()
	data, run := newDirs(t)
	if o.dataDir != "" {
		data = o.dataDir
	}
	if o.base == "" {
		o.base = baseISO
	}
	if o.pack == "" {
		o.pack = packISO
	}
	in := &instance{t: t, dataDir: data, runDir: run, sock: filepath.Join(run, "docker.sock"), stderr: &syncBuffer{}, done: make(chan struct{})}
	args := []string{"run", "--base-image", o.base, "--version-pack", o.pack, "--data-dir", data, "--run-dir", run, "--image-mode", "userspace", "--log-level", "debug"}
	if !o.noExpose {
		args = append(args, "--expose", "docker=unix://"+in.sock)
	}
	if o.config != nil {
		b, _ := json.Marshal(o.config)
		path := filepath.Join(run, "config.json")
		os.WriteFile(path, b, 0o644)
		args = append(args, "--config", path)
	}
	args = append(args, o.extra...)
	in.cmd = exec.Command(binary, args...)
	if o.netns != "" {
		// nsenter enters the network namespace and execs ddinit: the same
		// process, in the test's mount namespace.
		in.cmd = exec.Command("nsenter", append([]string{"--net=" + o.netns, binary}, args...)...)
	}
	in.cmd.Stderr = in.stderr
	in.cmd.Stdout = in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		in.err = in.cmd.Wait()
		close(in.done)
	}()
	t.Cleanup(func() {
		select {
		case <-in.done:
		default:
			in.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-in.done:
			case <-time.After(60 * time.Second):
				in.cmd.Process.Kill()
				<-in.done
			}
		}
		if t.Failed() {
			t.Logf("ddinit output:\n%s", tail(in.stderr.String(), 60))
		}
	})
	return in
}

func tail(s string, n int) string {
	var lines []string
	repeats := 0
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		// A retry logged every few seconds would push what matters out:
		// runs of the same message are one line and a count.
		if len(lines) > 0 && sameMsg(lines[len(lines)-1], line) {
			repeats++
			continue
		}
		if repeats > 0 {
			lines = append(lines, fmt.Sprintf("        (the line above %d more times)", repeats))
			repeats = 0
		}
		lines = append(lines, line)
	}
	if repeats > 0 {
		lines = append(lines, fmt.Sprintf("        (the line above %d more times)", repeats))
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sameMsg reports two JSON log lines with the same message.
func sameMsg(a, b string) bool {
	var x, y struct{ Msg string }
	return json.Unmarshal([]byte(a), &x) == nil && json.Unmarshal([]byte(b), &y) == nil && x.Msg != "" && x.Msg == y.Msg
}

// exited waits for ddinit to exit and returns its status.
func (in *instance) exited(timeout time.Duration) int {
	in.t.Helper()
	select {
	case <-in.done:
	case <-time.After(timeout):
		// Where it is stuck: Go prints every goroutine on SIGQUIT.
		mark := len(in.stderr.String())
		in.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-in.done:
		case <-time.After(5 * time.Second):
		}
		dump := in.stderr.String()[mark:]
		if len(dump) > 64<<10 {
			dump = dump[:64<<10]
		}
		in.t.Fatalf("ddinit did not exit within %s; its goroutines:\n%s", timeout, dump)
	}
	if in.err == nil {
		return 0
	}
	if ee, ok := in.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	in.t.Fatal(in.err)
	return -1
}

// stop sends SIGTERM and returns the exit status and how long it took.
func (in *instance) stop() (int, time.Duration) {
	in.t.Helper()
	start := time.Now()
	in.cmd.Process.Signal(syscall.SIGTERM)
	code := in.exited(90 * time.Second)
	return code, time.Since(start)
}

// ping asks dockerd's /_ping through the exposed socket.
func ping(sock string) error {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("_ping: %s", resp.Status)
	}
	return nil
}

func (in *instance) waitPing(timeout time.Duration) time.Duration {
	in.t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = ping(in.sock); err == nil {
			return time.Since(start)
		}
		select {
		case <-in.done:
			in.t.Fatalf("ddinit exited before docker answered (%v)", in.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	in.t.Fatalf("docker did not answer _ping within %s: %v", timeout, err)
	return 0
}

// docker runs the docker CLI against the exposed socket.
func (in *instance) docker(args ...string) string {
	in.t.Helper()
	out, err := in.dockerErr(args...)
	if err != nil {
		in.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (in *instance) dockerErr(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.sock, "DOCKER_CLI_HINTS=false")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// importBusybox imports a tiny image made of the static busybox: no
// registry is reachable here.
func (in *instance) importBusybox() {
	in.t.Helper()
	dir := in.t.TempDir()
	bin := filepath.Join(dir, "root", "bin")
	os.MkdirAll(bin, 0o755)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		in.t.Fatal("busybox is missing (make deps installs busybox-static)")
	}
	b, _ := os.ReadFile(bb)
	os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755)
	for _, a := range []string{"sh", "echo", "cat", "ls", "sleep", "sync", "httpd", "nc", "mkdir", "wget", "inotifyd", "true", "touch", "wc", "tty"} {
		os.Symlink("busybox", filepath.Join(bin, a))
	}
	tarball := filepath.Join(dir, "busybox.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "root"), "-cf", tarball, ".").CombinedOutput(); err != nil {
		in.t.Fatalf("tar: %v %s", err, out)
	}
	in.docker("import", tarball, "busybox:local")
}

// pid1 is the host pid of `ddinit init`, PID 1 of the namespaces: the
// child of ddinit run that lives in a pid namespace of its own.
func (in *instance) pid1() int {
	in.t.Helper()
	outer := in.cmd.Process.Pid
	own, _ := os.Readlink("/proc/self/ns/pid")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, p := range processes() {
			if p.ppid != outer {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); err == nil && ns != own {
				return p.pid
			}
		}
	}
	in.t.Fatal("no PID 1 found under ddinit run")
	return 0
}

// pidNS is the pid namespace of the instance's PID 1.
func (in *instance) pidNS() string {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", in.pid1()))
	if err != nil {
		in.t.Fatal(err)
	}
	return ns
}

type process struct {
	pid, ppid int
	comm      string
	state     string
}

func processes() []process {
	var out []process
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
		out = append(out, process{pid: pid, ppid: ppid, comm: s[open+1 : close], state: fields[0]})
	}
	return out
}

// inNS lists the processes in pid namespace ns.
func inNS(ns string) []process {
	var out []process
	for _, p := range processes() {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.pid)); err == nil && l == ns {
			out = append(out, p)
		}
	}
	return out
}

func findComm(ns, comm string) []int {
	var pids []int
	for _, p := range inNS(ns) {
		if p.comm == comm {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// hostMounts lists the host's mounts at or under any of dirs, or whose
// source or root names one.
func hostMounts(t *testing.T, dirs ...string) []string {
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

// logEntries reads ddinit's own JSON log from the data store.
func (in *instance) logEntries() []map[string]any {
	b, err := os.ReadFile(filepath.Join(in.dataDir, "log", "ddinit.log"))
	if err != nil {
		in.t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// customPack writes a version pack: build/docker.iso's tree changed by
// modify, with its sidecar.
func customPack(t *testing.T, modify func(root string)) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	img, err := iso9660.OpenFile(packISO)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	entries, err := img.Walk()
	if err != nil {
		t.Fatal(err)
	}
	if err := iso9660.ExtractAtomic(img, entries, tree, iso9660.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	modify(tree)
	out := filepath.Join(dir, "docker.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", out, tree).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, b)
	}
	writeSidecar(t, out)
	return out
}

func writeSidecar(t *testing.T, iso string) {
	b, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if err := os.WriteFile(iso+".sha256", []byte(hex.EncodeToString(sum[:])+"  "+filepath.Base(iso)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// addService writes a service definition into a version pack tree.
func addService(t *testing.T, root, name string, args []string, annotations map[string]string) {
	spec := map[string]any{
		"ociVersion":  "1.0.2",
		"process":     map[string]any{"args": args, "cwd": "/", "env": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}},
		"root":        map[string]any{"path": "/"},
		"linux":       map[string]any{},
		"annotations": annotations,
	}
	b, _ := json.MarshalIndent(spec, "", "  ")
	dir := filepath.Join(root, "containers", "services", name)
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

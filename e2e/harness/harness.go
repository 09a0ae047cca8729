package harness

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/internal/testutil"
)

// Paths of the artifacts `make test` builds before running the suite.
var (
	RepoRoot = repoRoot()
	// Binary is the ddinit every instance runs unless its Options name
	// another: bin/ddinit (make build's static binary), or the build
	// named by DDINIT_BINARY (make test also boots a plain `go build`,
	// dynamically linked, a PIE and a race-detector build).
	Binary  = ddinitBinary()
	BaseISO = filepath.Join(RepoRoot, "build", "docker-desktop.iso")
	PackISO = filepath.Join(RepoRoot, "build", "docker.iso")
	// Pack2010ISO is the older pack users upgrade from: dockerd 20.10,
	// containerd 1.6 (make isos builds both).
	Pack2010ISO = filepath.Join(RepoRoot, "build", "docker-20.10.iso")
	// CLIToolsISO is the docker CLI, compose and buildx offered to the
	// distros (make isos builds it).
	CLIToolsISO = filepath.Join(RepoRoot, "build", "cli-tools.iso")
	// KubernetesISO is the Kubernetes cluster's components (make isos
	// builds it).
	KubernetesISO = filepath.Join(RepoRoot, "build", "kubernetes.iso")
	// PackDockerVersion is the dockerd the default pack carries, as
	// packs/versions.env pins it (e.g. "28.5.2").
	PackDockerVersion = pinnedVersion("DOCKER_VERSION")
)

// pinnedVersion reads one KEY=value line of packs/versions.env, the file
// make isos builds the default pack from; "" when it is not there.
func pinnedVersion(key string) string {
	b, err := os.ReadFile(filepath.Join(RepoRoot, "packs", "versions.env"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v
		}
	}
	return ""
}

// repoRoot is the module's root: the nearest directory above the test's
// (go test runs a package's tests in the package's folder) that holds
// go.mod.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ".."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return filepath.Dir(dir)
		}
	}
}

func ddinitBinary() string {
	if b := os.Getenv("DDINIT_BINARY"); b != "" {
		abs, _ := filepath.Abs(b)
		return abs
	}
	return filepath.Join(RepoRoot, "bin", "ddinit")
}

// RequireEnvironment skips t unless the root tests are opted in (make
// test), and fails it when what the suite runs is missing: the binary,
// the images, the docker CLI.
func RequireEnvironment(t testing.TB) {
	t.Helper()
	testutil.RequiresRoot(t)
	for _, p := range []string{Binary, BaseISO, PackISO, Pack2010ISO, CLIToolsISO} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s is missing: run `make build isos` (make test does)", p)
		}
	}
	if PackDockerVersion == "" {
		t.Fatal("packs/versions.env names no DOCKER_VERSION")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is missing (make deps installs docker.io)")
	}
}

// Instance is one `ddinit run` under test.
type Instance struct {
	// DataDir is its data store, RunDir its run directory (short: unix
	// socket paths are limited to 107 bytes), Sock its exposed docker
	// socket (in RunDir; none with Options.NoExpose).
	DataDir, RunDir, Sock string

	t      testing.TB
	binary string
	cmd    *exec.Cmd
	output *SyncBuffer
	done   chan struct{}
	err    error
}

// SyncBuffer is a bytes.Buffer that goroutines may write and read at
// once (a process's output while the test reads it).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Options says how Start runs ddinit; the zero value is a boot of the
// test images on a new data store, at debug level, exposing the docker
// socket.
type Options struct {
	// Binary is the ddinit to run (default: Binary): a comparison runs
	// two builds in one test.
	Binary string
	// DataDir is the data store (default: a new one).
	DataDir string
	// Base and Pack are the images (default: BaseISO, PackISO).
	Base, Pack string
	// Config, when set, is written as the --config file.
	Config map[string]any
	// Extra are more arguments of ddinit run (later flags win).
	Extra []string
	// CLITools, when set, is the CLI tools image offered to the distros
	// (CLIToolsISO); unset, ddinit run is not told of one.
	CLITools string
	// Kubernetes, when set, is the Kubernetes image (KubernetesISO);
	// unset, ddinit run is given none.
	Kubernetes string
	// NoExpose leaves out --expose docker=…: no Sock.
	NoExpose bool
	// Netns, when set, is the network namespace (a path) ddinit run is
	// started in: a test's own "distro" network.
	Netns string
}

// NewDirs makes a data dir and a short run dir (unix socket paths are
// limited to 107 bytes), removed when t ends.
func NewDirs(t testing.TB) (string, string) {
	data := t.TempDir()
	run, err := os.MkdirTemp("/tmp", "ddinit-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	return data, run
}

// Start starts `ddinit run` as a real boot and returns at once; when t
// ends it is stopped (SIGTERM, then SIGKILL after 60 s) and, if t failed,
// the tail of its output is logged.
func Start(t testing.TB, o Options) *Instance {
	t.Helper()
	data, run := NewDirs(t)
	if o.DataDir != "" {
		data = o.DataDir
	}
	if o.Base == "" {
		o.Base = BaseISO
	}
	if o.Pack == "" {
		o.Pack = PackISO
	}
	if o.Binary == "" {
		o.Binary = Binary
	}
	in := &Instance{t: t, binary: o.Binary, DataDir: data, RunDir: run, Sock: filepath.Join(run, "docker.sock"), output: &SyncBuffer{}, done: make(chan struct{})}
	args := []string{"run", "--base-image", o.Base, "--version-pack", o.Pack, "--data-dir", data, "--run-dir", run, "--image-mode", "userspace", "--log-level", "debug"}
	if !o.NoExpose {
		args = append(args, "--expose", "docker=unix://"+in.Sock)
	}
	if o.CLITools != "" {
		args = append(args, "--cli-tools", o.CLITools)
	}
	kubernetes := "none"
	if o.Kubernetes != "" {
		kubernetes = o.Kubernetes
	}
	args = append(args, "--kubernetes-image", kubernetes)
	if o.Config != nil {
		b, _ := json.Marshal(o.Config)
		path := filepath.Join(run, "config.json")
		os.WriteFile(path, b, 0o644)
		args = append(args, "--config", path)
	}
	args = append(args, o.Extra...)
	in.cmd = exec.Command(o.Binary, args...)
	if o.Netns != "" {
		// nsenter enters the network namespace and execs ddinit: the same
		// process, in the test's mount namespace.
		in.cmd = exec.Command("nsenter", append([]string{"--net=" + o.Netns, o.Binary}, args...)...)
	}
	in.cmd.Stderr = in.output
	in.cmd.Stdout = in.output
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
			t.Logf("ddinit output:\n%s", Tail(in.output.String(), 60))
		}
	})
	return in
}

// Binary is the ddinit this instance runs.
func (in *Instance) Binary() string { return in.binary }

// Pid is the host pid of ddinit run.
func (in *Instance) Pid() int { return in.cmd.Process.Pid }

// Signal sends sig to ddinit run.
func (in *Instance) Signal(sig os.Signal) error { return in.cmd.Process.Signal(sig) }

// Output is what ddinit run wrote so far (stdout and stderr).
func (in *Instance) Output() string { return in.output.String() }

// Done is closed when ddinit run has exited; Err is then its wait error.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Err is ddinit run's exit as exec.Cmd.Wait returned it, once Done is
// closed.
func (in *Instance) Err() error { return in.err }

// Tail is the last n lines of a process's output, runs of the same log
// message folded into one line and a count.
func Tail(s string, n int) string {
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

// Exited waits for ddinit to exit and returns its status; past timeout it
// fails the test with ddinit's goroutines.
func (in *Instance) Exited(timeout time.Duration) int {
	in.t.Helper()
	select {
	case <-in.done:
	case <-time.After(timeout):
		// Where it is stuck: Go prints every goroutine on SIGQUIT.
		mark := len(in.output.String())
		in.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-in.done:
		case <-time.After(5 * time.Second):
		}
		dump := in.output.String()[mark:]
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

// Stop sends SIGTERM and returns the exit status and how long it took.
func (in *Instance) Stop() (int, time.Duration) {
	in.t.Helper()
	start := time.Now()
	in.cmd.Process.Signal(syscall.SIGTERM)
	code := in.Exited(90 * time.Second)
	return code, time.Since(start)
}

// KillTree is kill -9 of ddinit run and PID 1 at once (a power cut, the
// OOM killer, wsl --terminate); it returns once the namespace is empty.
func (in *Instance) KillTree() {
	in.t.Helper()
	ns := in.PidNS()
	syscall.Kill(in.Pid1(), syscall.SIGKILL)
	in.cmd.Process.Signal(syscall.SIGKILL)
	in.Exited(30 * time.Second)
	for deadline := time.Now().Add(10 * time.Second); len(InNS(ns)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// LogEntries reads ddinit's own JSON log from the data store.
func (in *Instance) LogEntries() []map[string]any {
	b, err := os.ReadFile(filepath.Join(in.DataDir, "log", "ddinit.log"))
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

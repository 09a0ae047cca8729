package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The second baseline of the warm boot: the pack's own containerd, and
// dockerd started as a containerd task by containerd's own client (ctr
// run, of the pack's containerd release) from the very spec ddinit gives
// it, under the same OCI runtime. Against it the ratio shows ddinit's own
// cost apart from what running dockerd as a task costs.

// ctrBinary is the ctr of the containerd release packISO carries: 20.10's
// is Debian's containerd, this machine's /usr/bin/ctr; the default pack's
// is built from the module the pack's containerd comes from, cached.
func ctrBinary(t *testing.T, packISO string) string {
	t.Helper()
	if packISO == harness.Pack2010ISO {
		if _, err := os.Stat("/usr/bin/ctr"); err != nil {
			t.Fatal("/usr/bin/ctr is missing (Debian's containerd package, which make deps installs)")
		}
		return "/usr/bin/ctr"
	}
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot, "packs", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	module, version := env["CONTAINERD_MODULE"], env["CONTAINERD_MODULE_VERSION"]
	cache := os.Getenv("DDINIT_CACHE")
	if cache == "" {
		home, _ := os.UserCacheDir()
		cache = filepath.Join(home, "ddinit")
	}
	dir := filepath.Join(cache, "bench", "ctr-"+version)
	bin := filepath.Join(dir, "ctr")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	build := exec.Command("go", "install", module+"/cmd/ctr@"+version)
	build.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build ctr %s: %v\n%s", version, err, out)
	}
	return bin
}

// dockerdSpec is the OCI spec ddinit's containerd holds for dockerd in
// the running instance in, and the runtime its task runs under, made to
// run in the baseline's root: dockerd's flags the bare baseline's, its
// cgroup a path of the bench's own.
func dockerdSpec(t *testing.T, in *harness.Instance, ctr string) (spec []byte, runtime string) {
	t.Helper()
	sock := fmt.Sprintf("/proc/%d/root/run/containerd/containerd.sock", in.Pid1())
	out, err := exec.Command(ctr, "--address", sock, "-n", "services.ddinit", "containers", "info", "dockerd").Output()
	if err != nil {
		t.Fatalf("ctr containers info dockerd: %v", err)
	}
	var info struct {
		Spec map[string]any `json:"Spec"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Spec == nil {
		t.Fatalf("ctr containers info dockerd: %v\n%s", err, out)
	}
	process := info.Spec["process"].(map[string]any)
	args := make([]any, len(bareDockerdArgs))
	for i, a := range bareDockerdArgs {
		args[i] = a
	}
	process["args"] = args
	if linux, ok := info.Spec["linux"].(map[string]any); ok {
		linux["cgroupsPath"] = "/ddinit-bench-ctr/dockerd"
	}
	if _, ok := info.Spec["mounts"]; !ok {
		info.Spec["mounts"] = []any{}
	}
	spec, _ = json.Marshal(info.Spec)
	for _, s := range in.Status().Services {
		if s.Name == "dockerd" {
			runtime = s.Runtime
		}
	}
	return spec, runtime
}

// bareDockerdArgs are dockerd's flags in both baselines.
var bareDockerdArgs = []string{"dockerd", "--containerd=/var/lib/containerd.sock", "--host=unix:///var/lib/docker.sock", "--config-file=/var/lib/daemon.json", "--data-root=/var/lib/docker", "--exec-root=/run/docker", "--pidfile=/run/docker.pid"}

// bootCtr starts the pack's containerd as the bare baseline does, then
// dockerd as its task with ctr run from spec (its root: the baseline's
// root bound at ddinit's root path for services, as ddinit binds its
// own; its output to a file, as ddinit takes it to its log, since the
// fifos ctr would make are not where the chrooted containerd looks), and
// returns the time until dockerd answers _ping. It stops
// dockerd as ddinit does (SIGTERM to the task), then containerd.
func bootCtr(t *testing.T, dir, base, pack, ctr string, spec []byte, runtime string) time.Duration {
	t.Helper()
	sock := filepath.Join(dir, "docker.sock")
	ctrdSock := filepath.Join(dir, "containerd.sock")
	os.Remove(ctrdSock)
	os.Remove(sock)
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	os.MkdirAll(filepath.Join(dir, "upper"), 0o755)
	if _, err := os.Stat(filepath.Join(dir, "containerd.toml")); err != nil {
		// bootBare's containerd configuration and daemon.json.
		bootBare(t, dir, base, pack)
		os.Remove(ctrdSock)
		os.Remove(sock)
	}
	specFile := filepath.Join(dir, "dockerd-spec.json")
	os.WriteFile(specFile, spec, 0o644)
	runtimeFlag := ""
	if runtime == "crun" {
		runtimeFlag = "--runc-binary /usr/bin/crun"
	}
	// Under crun the spec binds each shared mount of ddinit's namespace
	// again (services.sharedBinds): the same binds here, of the same
	// paths in the baseline's root, made where it lacks them.
	var held struct {
		Mounts []struct{ Source, Type string } `json:"mounts"`
	}
	json.Unmarshal(spec, &held)
	var bindSources strings.Builder
	for _, m := range held.Mounts {
		if m.Type == "bind" && filepath.IsAbs(m.Source) {
			fmt.Fprintf(&bindSources, "mkdir -p %s\n", filepath.Join(root, m.Source))
		}
	}
	ctrCmd := fmt.Sprintf("%s --address %s -n bench", ctr, ctrdSock)
	// A /dev of its own, as ddinit's namespace has: runc, setting up
	// dockerd's, replaces /dev/ptmx, which through the bare root's bind
	// would be the machine's.
	script := bareRootScript(dir, base, pack, root) + fmt.Sprintf(`mount -t tmpfs -o mode=0755,size=4m tmpfs %[2]s/dev
for n in null zero full random urandom tty; do touch %[2]s/dev/$n; mount --bind /dev/$n %[2]s/dev/$n; done
mkdir %[2]s/dev/pts %[2]s/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts %[2]s/dev/pts
ln -s pts/ptmx %[2]s/dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs %[2]s/dev/shm
mkdir -p %[2]s/run/ddinit/rootfs
%[6]smount --rbind %[2]s %[2]s/run/ddinit/rootfs
chroot %[2]s containerd --config /var/lib/containerd.toml >%[1]s/containerd.log 2>&1 &
ctrd=$!
trap 'kill -TERM $ctrd; wait $ctrd; exit 0' TERM
while [ ! -S %[1]s/containerd.sock ]; do sleep 0.005; done
%[3]s containers delete dockerd >/dev/null 2>&1 || true
%[3]s run -d --log-uri file:///var/lib/dockerd-task.log %[4]s --config %[5]s dockerd
wait $ctrd
`, dir, root, ctrCmd, runtimeFlag, specFile, bindSources.String())
	cmd := exec.Command("unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &harness.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	ctl := func(args ...string) error {
		return exec.Command(ctr, append([]string{"--address", ctrdSock, "-n", "bench"}, args...)...).Run()
	}
	defer func() {
		// dockerd stopped as ddinit stops it, its task and container
		// removed, then containerd.
		ctl("task", "kill", "-s", "SIGTERM", "dockerd")
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ctl("task", "delete", "dockerd") == nil {
				break
			}
		}
		ctl("containers", "delete", "dockerd")
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(kids)); len(f) > 0 {
			var pid int
			fmt.Sscan(f[0], &pid)
			syscall.Kill(pid, syscall.SIGTERM)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	for time.Since(begin) < 60*time.Second {
		if harness.Ping(sock) == nil {
			return time.Since(begin)
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("the ctr baseline ended:\n%s\ncontainerd's log:\n%s", harness.Tail(out.String(), 20), harness.Tail(string(log), 20))
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("dockerd started by ctr did not answer:\n%s", harness.Tail(out.String(), 20))
	return 0
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/iso9660"

	"github.com/ddinit/ddinit/pid1"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/timeline"
)

// TestBenchBoot is `make bench` for the boot chain. Every figure is printed
// next to a baseline measured in the same run; nothing is asserted about
// time. It runs only when DDINIT_BENCH=1.
func TestBenchBoot(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	t.Logf("BENCH cgroup layout the boots run on: %s", cgroupLayout())
	runs := 5
	if v := os.Getenv("DDINIT_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}

	// Cold: a new data store each time, so the images are verified,
	// copied and extracted.
	var cold []time.Duration
	for range max(runs/2, 2) {
		in := harness.Start(t, harness.Options{Extra: asDeployed})
		cold = append(cold, in.WaitPing(60*time.Second))
		in.Stop()
	}

	// Warm, for each pack (the default one, and 20.10's), against its
	// own bare baseline: one data store, booted again and again.
	var w time.Duration
	var mem []processMemory
	var shutdown []time.Duration
	for i, packISO := range []string{harness.PackISO, harness.Pack2010ISO} {
		r := warmRounds(t, packISO, runs, i == 0)
		if i == 0 {
			w, mem, shutdown = r.warm, r.mem, r.shutdown
		}
	}
	t.Logf("BENCH boot to _ping, cold (verify + copy + extract both images): %v (target <= 2s), %.2fx the warm boot",
		median(cold).Round(time.Millisecond), float64(median(cold))/float64(w))
	var own processMemory
	for _, m := range mem {
		t.Logf("BENCH idle memory: %-12s USS %6.1f MB  PSS %6.1f MB", m.name, float64(m.uss)/1024, float64(m.pss)/1024)
		if m.name == "ddinit run" || m.name == "PID 1" {
			own.uss, own.pss = own.uss+m.uss, own.pss+m.pss
		}
	}
	t.Logf("BENCH idle memory of ddinit's own two processes: USS %.1f MB (target <= 12 MB), PSS %.1f MB; %.2fx containerd's USS",
		float64(own.uss)/1024, float64(own.pss)/1024, float64(own.uss)/float64(max(mem[2].uss, 1)))
	t.Logf("BENCH clean shutdown (SIGTERM to exit, dockerd and containerd stopped, data synced): %v, %.2fx the warm boot",
		median(shutdown).Round(time.Millisecond), float64(median(shutdown))/float64(w))
}

// warmRound is what the warm rounds of one pack measured.
type warmRound struct {
	warm     time.Duration
	mem      []processMemory
	shutdown []time.Duration
}

// warmRounds boots packISO on one data store again and again, each round
// beside the pack's containerd and dockerd started bare, and prints the
// ratio and the timelines side by side; with memory, the idle memory of
// the first round too.
func warmRounds(t *testing.T, packISO string, runs int, memory bool) warmRound {
	data, _ := harness.NewDirs(t)
	first := harness.Start(t, harness.Options{DataDir: data, Pack: packISO, Extra: asDeployed})
	first.WaitPing(60 * time.Second)
	engine := strings.TrimSpace(first.Docker("version", "--format", "{{.Server.Version}}"))
	ctr := ctrBinary(t, packISO)
	spec, runtime := dockerdSpec(t, first, ctr)
	first.Stop()
	var r warmRound
	var warm, bare, byCtr []time.Duration
	var ours, theirs []map[string]float64 // each round's events, ms since its start
	// The bare baseline restarts on a data root of its own that has been
	// booted once too: dockerd's start on existing state (its network
	// store, its image and container metadata) is slower than on an empty
	// directory, and ddinit's warm boots restart on existing state.
	bareDir, err := os.MkdirTemp("/tmp", "ddinit-bare-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(bareDir)
	ctrDir, err := os.MkdirTemp("/tmp", "ddinit-ctr-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(ctrDir)
	base, pack := bareRoot(t, packISO)
	bootBare(t, bareDir, base, pack)
	bootCtr(t, ctrDir, base, pack, ctr, spec, runtime)
	for i := range runs {
		in := harness.Start(t, harness.Options{DataDir: data, Pack: packISO, Extra: asDeployed})
		warm = append(warm, in.WaitPing(60*time.Second))
		ours = append(ours, eventTimes(in.BootTimeline()))
		if i == 0 && memory {
			r.mem = idleMemory(t, in)
		}
		_, took := in.Stop()
		r.shutdown = append(r.shutdown, took)
		d, marks := bootBare(t, bareDir, base, pack)
		bare = append(bare, d)
		theirs = append(theirs, eventTimes(timeline.Steps(marks)))
		byCtr = append(byCtr, bootCtr(t, ctrDir, base, pack, ctr, spec, runtime))
	}
	w, d, c := median(warm), median(bare), median(byCtr)
	t.Logf("BENCH [dockerd %s] boot to _ping, warm cache, %d alternating rounds: ddinit %v, the pack's containerd+dockerd started bare by a script %v, difference %+v, ratio %.2f (target <= 1.10; spread of the ratios %s)",
		engine, runs, w.Round(time.Millisecond), d.Round(time.Millisecond), (w - d).Round(time.Millisecond), float64(w)/float64(d), ratioSpread(warm, bare))
	t.Logf("BENCH [dockerd %s] boot to _ping, warm cache, %d alternating rounds: ddinit %v, the pack's containerd with dockerd as its task started by ctr run from ddinit's spec (%s) %v, difference %+v, ratio %.2f (target <= 1.05; spread of the ratios %s)",
		engine, runs, w.Round(time.Millisecond), runtime, c.Round(time.Millisecond), (w - c).Round(time.Millisecond), float64(w)/float64(c), ratioSpread(warm, byCtr))
	printTimelines(t, ours, theirs)
	r.warm = w
	return r
}

// printTimelines prints ddinit's warm boot timeline (the median of each
// event) beside the bare baseline's, and ddinit's own steps.
func printTimelines(t *testing.T, ours, theirs []map[string]float64) {
	printSideBySide(t, "boot timeline, median ms since the start (ddinit: ddinit run's start; bare: the script's)", "ddinit", "bare", ours, theirs)
	// ddinit's own steps, each the median over the rounds of the time
	// between its two events.
	own := func(from, to string) float64 {
		var v []float64
		for _, r := range ours {
			a, okA := r[from]
			b, okB := r[to]
			if okA && okB {
				v = append(v, b-a)
			}
		}
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	a := own("starting PID 1 (new namespaces)", "containerd started")
	b := own("containerd answering", "dockerd: task started")
	c := own("dockerd: API listening (its log)", firstAnswer)
	t.Logf("BENCH ddinit's own steps: PID 1 start -> containerd exec %.1f ms; containerd answering -> dockerd's task started %.1f ms; dockerd's API listen -> first answer through the exposed socket %.1f ms; total %.1f ms (target <= 60)", a, b, c, a+b+c)
}

// bareRoot is the root the bare baseline runs in: the pack's tree over
// build/docker-desktop.iso's (what ddinit's overlay shows), so
// that it starts the version pack's containerd and dockerd, not PATH's.
func bareRoot(t *testing.T, packISO string) (base, pack string) {
	dir := t.TempDir()
	for _, im := range []struct{ iso, tree string }{{harness.BaseISO, "base"}, {packISO, "pack"}} {
		img, err := iso9660.OpenFile(im.iso)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := img.Walk()
		if err != nil {
			t.Fatal(err)
		}
		if err := iso9660.ExtractAtomic(img, entries, filepath.Join(dir, im.tree), iso9660.ExtractOptions{}); err != nil {
			t.Fatal(err)
		}
		img.Close()
	}
	return filepath.Join(dir, "base"), filepath.Join(dir, "pack")
}

// bootBare starts the version pack's containerd and then its dockerd,
// with ddinit's flags and containerd configuration, from a shell script
// in fresh mount, network and pid namespaces, chrooted into the pack over
// the base, with their state under dir; it returns the time until dockerd
// answers _ping and the timeline of that start, marked as ddinit marks its
// own: the script's steps as it reports them (containerd "answering" when
// its socket appears: the script cannot ask it more), dockerd's log lines
// at their own time stamps, the first answer when it came.
func bootBare(t *testing.T, dir, base, pack string) (time.Duration, []timeline.Mark) {
	sock := filepath.Join(dir, "docker.sock")
	// A socket file left by the previous run would end the script's wait
	// for containerd before it listens.
	os.Remove(filepath.Join(dir, "containerd.sock"))
	os.Remove(sock)
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	// The root's changes go to a tmpfs, as ddinit's overlay's do (dockerd
	// writes /etc/docker/key.json).
	os.MkdirAll(filepath.Join(dir, "upper"), 0o755)
	// The same containerd configuration ddinit writes, and the daemon.json
	// dockerd gets from ddinit (the pack's, with live-restore on).
	conf := services.ContainerdConfig("/var/lib/containerd", "/run/containerd", "/var/lib/containerd.sock", packContainerdConfigVersion(t, pack), nil)
	os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(`{"features": {"buildkit": true}, "live-restore": true}`), 0o644)
	script := bareRootScript(dir, base, pack, root) + fmt.Sprintf(`echo "bare: containerd started"
chroot %[2]s containerd --config /var/lib/containerd.toml >%[1]s/containerd.log 2>&1 &
while [ ! -S %[1]s/containerd.sock ]; do sleep 0.005; done
echo "bare: containerd answering"
echo "bare: dockerd started"
exec chroot %[2]s %[3]s 2>&1
`, dir, root, strings.Join(bareDockerdArgs, " "))
	cmd := exec.Command("unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	var marks timeline.Recorder
	var logged strings.Builder
	var logMu sync.Mutex
	milestones := append([]timeline.Milestone{
		{Contains: "bare: containerd started", Event: "containerd started"},
		{Contains: "bare: containerd answering", Event: "containerd answering"},
		{Contains: "bare: dockerd started", Event: "dockerd: task started"},
	}, pid1.DockerdMilestones...)
	sink := timeline.WatchLines(nopWriteCloser{&lockedWriter{&logMu, &logged}}, milestones, marks.MarkAt)
	begin := time.Now()
	marks.MarkAt("started", begin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	go func() { io.Copy(sink, out); close(copied) }()
	defer func() {
		// dockerd (the child unshare forked, its pid namespace's first
		// process) is stopped as ddinit stops it, with SIGTERM, and
		// shuts down cleanly; unshare ends with it.
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(kids)); len(f) > 0 {
			pid, _ := strconv.Atoi(f[0])
			syscall.Kill(pid, syscall.SIGTERM)
		} else {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
		done := make(chan struct{})
		go func() { <-copied; cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	for time.Since(begin) < 60*time.Second {
		if harness.Ping(sock) == nil {
			took := time.Since(begin)
			marks.Mark(firstAnswer)
			return took, marks.Marks()
		}
		time.Sleep(5 * time.Millisecond)
	}
	logMu.Lock()
	defer logMu.Unlock()
	t.Fatalf("the bare dockerd did not answer:\n%s", harness.Tail(logged.String(), 20))
	return 0, nil
}

const firstAnswer = "first answer through an exposed socket"

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type processMemory struct {
	name     string
	uss, pss int // KB
}

// idleMemory is the private (USS) and proportional (PSS) memory of
// ddinit's two processes, containerd and dockerd once the boot has
// settled, containers have run and the frontend has polled health, as it
// idles for hours.
func idleMemory(t *testing.T, in *harness.Instance) []processMemory {
	time.Sleep(2 * time.Second) // the boot settles
	in.ImportBusybox()
	for i := range 3 {
		in.Docker("run", "--rm", "busybox:local", "echo", strconv.Itoa(i))
	}
	for range 20 {
		in.Get(http.MethodGet, "/ping")
		in.Get(http.MethodGet, "/status")
		harness.Ping(in.Sock)
		time.Sleep(25 * time.Millisecond)
	}
	// Then idle as the frontend keeps it, polling health every second,
	// past ddinit's next look at its free heap.
	for range 12 {
		in.Get(http.MethodGet, "/ping")
		time.Sleep(time.Second)
	}
	ns := in.PidNS()
	pids := []struct {
		name string
		pid  int
	}{{"ddinit run", in.Pid()}, {"PID 1", in.Pid1()}}
	for _, comm := range []string{"containerd", "dockerd"} {
		if p := harness.FindComm(ns, comm); len(p) == 1 {
			pids = append(pids, struct {
				name string
				pid  int
			}{comm, p[0]})
		}
	}
	var out []processMemory
	for _, p := range pids {
		out = append(out, processMemory{name: p.name, uss: memKB(p.pid, "Private_Clean:") + memKB(p.pid, "Private_Dirty:"), pss: memKB(p.pid, "Pss:")})
	}
	return out
}

// bareRootScript is the start of a shell script that mounts what the bare
// baselines run in at root, in their own mount namespace: the pack's tree
// over the base's under an overlay whose changes go to a tmpfs (as
// ddinit's do), /proc, /sys, /dev, a tmpfs /run and /tmp, and dir, their
// state, at /var/lib.
func bareRootScript(dir, base, pack, root string) string {
	return fmt.Sprintf(`set -e
mount --make-rprivate /
mount -t tmpfs tmpfs %[1]s/upper
mkdir %[1]s/upper/data %[1]s/upper/work
mount -t overlay overlay -o lowerdir=%[3]s:%[2]s,upperdir=%[1]s/upper/data,workdir=%[1]s/upper/work %[4]s
mount -t proc proc %[4]s/proc
mount --rbind /sys %[4]s/sys
mount --rbind /dev %[4]s/dev
mount -t tmpfs tmpfs %[4]s/run
mount -t tmpfs tmpfs %[4]s/tmp
mount --bind %[1]s %[4]s/var/lib
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
`, dir, base, pack, root)
}

// packContainerdConfigVersion is the config format the containerd in the
// pack extracted at dir reads, as its manifest names its version.
func packContainerdConfigVersion(t *testing.T, dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "version-pack.json"))
	if err != nil {
		t.Fatalf("the pack's manifest: %v", err)
	}
	var m struct {
		Components []struct{ Name, Version string }
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("the pack's manifest: %v", err)
	}
	for _, c := range m.Components {
		if c.Name == "containerd" {
			return services.ContainerdConfigVersion(c.Version)
		}
	}
	return services.ContainerdConfigVersion("")
}

// cgroupLayout says which cgroup layout the bench runs on (make bench's
// CGROUPS, scripts/cgroup-view.sh), and so which runtime ddinit's own
// tasks get (crun where v2 is alone, as on WSL 2; runc otherwise).
func cgroupLayout() string {
	h, err := cgroup.Detect("/sys/fs/cgroup")
	switch {
	case err != nil:
		return err.Error()
	case !h.V2:
		return "v1 or hybrid, this machine's own (ddinit's tasks under runc)"
	}
	b, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	return fmt.Sprintf("v2 alone, as WSL 2 mounts it (ddinit's tasks under crun where the pack has it; controllers: %q)", strings.TrimSpace(string(b)))
}

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

	"github.com/ddinit/ddinit/services"
)

// TestBenchBoot is `make bench` for the boot chain. Every figure is printed
// next to a baseline measured in the same run; nothing is asserted about
// time. It runs only when DDINIT_BENCH is set.
func TestBenchBoot(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") == "" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	requireEnvironment(t)
	runs := 5
	if v := os.Getenv("DDINIT_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}

	// Cold: a new data store each time, so the images are verified,
	// copied and extracted.
	var cold []time.Duration
	for range max(runs/2, 2) {
		in := start(t, options{extra: asDeployed})
		cold = append(cold, in.waitPing(60*time.Second))
		in.stop()
	}

	// Warm: one data store, booted again and again.
	data, _ := newDirs(t)
	first := start(t, options{dataDir: data, extra: asDeployed})
	first.waitPing(60 * time.Second)
	first.stop()
	var warm, direct, shutdown []time.Duration
	var mem []processMemory
	// The script's baseline restarts on a data root of its own that has
	// been booted once too: dockerd's start on existing state (its network
	// store, its image and container metadata) is slower than on an empty
	// directory, and ddinit's warm boots restart on existing state.
	directDir, err := os.MkdirTemp("/tmp", "ddinit-direct-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(directDir)
	bootDirectly(t, directDir)
	for i := range runs {
		in := start(t, options{dataDir: data, extra: asDeployed})
		warm = append(warm, in.waitPing(60*time.Second))
		if i == 0 {
			mem = idleMemory(t, in)
		}
		_, took := in.stop()
		shutdown = append(shutdown, took)
		direct = append(direct, bootDirectly(t, directDir))
	}
	w, d := median(warm), median(direct)
	t.Logf("BENCH boot to _ping, warm cache: ddinit %v, containerd+dockerd started by a script %v, difference %+v (target <= +150ms), ratio %.2f",
		w.Round(time.Millisecond), d.Round(time.Millisecond), (w - d).Round(time.Millisecond), float64(w)/float64(d))
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

// asDeployed measures ddinit as it runs on a machine: the tests log at
// debug level, the distro's config at info.
var asDeployed = []string{"--log-level", "info"}

// bootDirectly starts containerd and dockerd the way ddinit does, with the
// same binaries and flags, from a shell script in fresh namespaces, with
// their state under dir, and returns the time until dockerd answers _ping.
func bootDirectly(t *testing.T, dir string) time.Duration {
	sock := filepath.Join(dir, "docker.sock")
	// A socket file left by the previous run would end the script's wait
	// for containerd before it listens.
	os.Remove(filepath.Join(dir, "containerd.sock"))
	os.Remove(sock)
	conf := filepath.Join(dir, "containerd.toml")
	// The same containerd configuration ddinit writes, and the daemon.json
	// dockerd gets from ddinit (the pack's, with live-restore on).
	os.WriteFile(conf, []byte(services.ContainerdConfig(dir+"/containerd", dir+"/containerd-state", dir+"/containerd.sock")), 0o644)
	os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(`{"features": {"buildkit": true}, "live-restore": true}`), 0o644)
	script := fmt.Sprintf(`
containerd --config %[2]s >%[1]s/containerd.log 2>&1 &
while [ ! -S %[1]s/containerd.sock ]; do sleep 0.005; done
exec dockerd --containerd=%[1]s/containerd.sock --host=unix://%[3]s --config-file=%[1]s/daemon.json --data-root=%[1]s/docker --exec-root=%[1]s/exec --pidfile=%[1]s/docker.pid >%[1]s/dockerd.log 2>&1
`, dir, conf, sock)
	cmd := exec.Command("unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	for time.Since(begin) < 60*time.Second {
		if ping(sock) == nil {
			return time.Since(begin)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
	t.Fatalf("directly started dockerd did not answer:\n%s", tail(string(b), 20))
	return 0
}

type processMemory struct {
	name     string
	uss, pss int // KB
}

// idleMemory is the private (USS) and proportional (PSS) memory of
// ddinit's two processes, containerd and dockerd once the boot has
// settled, containers have run and the frontend has polled health, as it
// idles for hours.
func idleMemory(t *testing.T, in *instance) []processMemory {
	time.Sleep(2 * time.Second) // the boot settles
	in.importBusybox()
	for i := range 3 {
		in.docker("run", "--rm", "busybox:local", "echo", strconv.Itoa(i))
	}
	for range 20 {
		in.get(http.MethodGet, "/ping")
		in.get(http.MethodGet, "/status")
		ping(in.sock)
		time.Sleep(25 * time.Millisecond)
	}
	// Then idle as the frontend keeps it, polling health every second,
	// past ddinit's next look at its free heap.
	for range 12 {
		in.get(http.MethodGet, "/ping")
		time.Sleep(time.Second)
	}
	ns := in.pidNS()
	pids := []struct {
		name string
		pid  int
	}{{"ddinit run", in.cmd.Process.Pid}, {"PID 1", in.pid1()}}
	for _, comm := range []string{"containerd", "dockerd"} {
		if p := findComm(ns, comm); len(p) == 1 {
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

// memKB reads one field (Rss:, Pss:) of a process's smaps_rollup.
func memKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

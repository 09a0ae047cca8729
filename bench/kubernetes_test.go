package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/kube"
	"github.com/ddinit/ddinit/kubeapi"
	"github.com/ddinit/ddinit/network"
)

// k3sServerMB is the figure the cluster's memory is compared with: k3s's
// published ~512 MB for its server (we found no memory figure for Docker
// Desktop's own cluster in its documentation).
const k3sServerMB = 512

// kubeIdle is how long the cluster idles after Ready before its memory
// is read: past the controllers' first resyncs, no pod of its own.
const kubeIdle = 60 * time.Second

// TestBenchKubernetes is `make bench` for the Kubernetes setting: the
// time from PUT /settings {"kubernetes": true} to the node Ready (as
// /status's nodeReady says: ddinit's own look at the node through the
// API server), and the cluster's idle memory. The first switch-on of a
// new data store (the image verified and unpacked, the PKI made, etcd
// empty) is printed alone; then, in each round, the setting off, POST
// /kubernetes/reset while off (etcd, the PKI and kubelet's folder
// wiped) and on again: every round makes a new cluster from nothing, the
// same work as the first switch-on but the image's unpacking, so the
// rounds are alike and their median and spread mean something (off and
// on without the reset would restart on a bootstrapped etcd, a lighter
// path: it is measured once at the end). After the last round the
// cluster idles kubeIdle with no pod; each component's USS and PSS (and
// its shim's) are read from smaps_rollup, and containerd's with the CRI
// on against containerd's 30 s after the setting went off (restarted
// without the CRI): the CRI's own cost.
func TestBenchKubernetes(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	if _, err := os.Stat(harness.KubernetesISO); err != nil {
		t.Skipf("BENCH Kubernetes skipped: %s is missing (make isos builds it)", harness.KubernetesISO)
	}
	rounds := 3
	if v := os.Getenv("DDINIT_BENCH_KUBE_ROUNDS"); v != "" {
		fmt.Sscan(v, &rounds)
	}
	begin := time.Now()
	in := harness.Start(t, harness.Options{Kubernetes: harness.KubernetesISO, Extra: asDeployed})
	in.WaitPing(90 * time.Second)
	version := ""

	first := switchOnToReady(t, in)
	if st := in.Status().Kubernetes; st != nil {
		version = st.Version
	}
	var fresh []kubeStart
	for range rounds {
		setKubernetes(t, in, false)
		if code, body := in.Get(http.MethodPost, "/kubernetes/reset"); code != http.StatusNoContent {
			t.Fatalf("POST /kubernetes/reset: %d %s", code, body)
		}
		fresh = append(fresh, switchOnToReady(t, in))
	}
	t.Logf("BENCH [Kubernetes %s] the setting on to the node Ready (PUT /settings sent to /status nodeReady), a new cluster each time:", version)
	t.Logf("BENCH   first switch-on of a new data store (image verified and unpacked, PKI made): %v (the PUT answered after %v: the engine back with the CRI)",
		first.ready.Round(100*time.Millisecond), first.answered.Round(100*time.Millisecond))
	if len(fresh) > 0 {
		var ready, answered []time.Duration
		for _, r := range fresh {
			ready, answered = append(ready, r.ready), append(answered, r.answered)
		}
		t.Logf("BENCH   after off + POST /kubernetes/reset, %d rounds: median %v (spread %s), the PUT answered after %v",
			len(fresh), median(ready).Round(100*time.Millisecond), durSpread(ready), median(answered).Round(100*time.Millisecond))
	}
	printKubeSteps(t, append([]kubeStart{first}, fresh...))

	// Idle: no pod but the cluster's own (it has none: CoreDNS and
	// kube-proxy run as services), kubeIdle after Ready.
	time.Sleep(kubeIdle)
	if st := in.Status().Kubernetes; st == nil || !st.NodeReady {
		t.Fatalf("the node is not Ready after idling: %+v", st)
	}
	if pods := podCount(t, in); pods != 0 {
		t.Fatalf("%d pods in the idle cluster: it should have none", pods)
	}
	ns := in.PidNS()
	st := in.Status()
	var rows []processMemory
	var comps, shims processMemory
	seen := map[int]bool{} // a shim counted once, however many tasks it runs
	for _, name := range kube.Components {
		s := serviceNamed(st, name)
		if s.PID == 0 {
			t.Fatalf("%s has no pid: %+v", name, s)
		}
		pid := hostPidIn(t, ns, s.PID)
		if args := cmdline(pid); len(args) < 2 || !strings.HasSuffix(args[0], "/usr/bin/kube") || args[1] != name {
			t.Fatalf("%s: pid %d (%d in ddinit's namespace) runs %q", name, pid, s.PID, args)
		}
		m := memoryOf(name, pid)
		rows = append(rows, m)
		comps.uss, comps.pss = comps.uss+m.uss, comps.pss+m.pss
		if shim := parentPid(pid); strings.HasPrefix(comm(shim), "containerd-shim") && !seen[shim] {
			seen[shim] = true
			sm := memoryOf("shim", shim)
			shims.uss, shims.pss = shims.uss+sm.uss, shims.pss+sm.pss
		}
	}
	criOn := memoryOf("containerd", hostPidIn(t, ns, st.Containerd.PID))

	// containerd without the CRI: the setting off, the same idle engine.
	setKubernetes(t, in, false)
	time.Sleep(30 * time.Second)
	criOff := memoryOf("containerd", hostPidIn(t, ns, in.Status().Containerd.PID))
	// Off and on again, the state kept.
	kept := switchOnToReady(t, in)

	t.Logf("BENCH   off and on again, etcd and the PKI kept: %v", kept.ready.Round(100*time.Millisecond))
	t.Logf("BENCH [Kubernetes %s] idle memory %v after Ready, no pod (smaps_rollup; PSS shares the one kube program's pages among the seven):", version, kubeIdle)
	t.Logf("BENCH   %-26s %9s %9s", "process", "USS MB", "PSS MB")
	for _, m := range rows {
		t.Logf("BENCH   %-26s %9.1f %9.1f", m.name, mb(m.uss), mb(m.pss))
	}
	t.Logf("BENCH   %-26s %9.1f %9.1f", "the seven", mb(comps.uss), mb(comps.pss))
	t.Logf("BENCH   %-26s %9.1f %9.1f", fmt.Sprintf("their shims (%d)", len(seen)), mb(shims.uss), mb(shims.pss))
	t.Logf("BENCH   %-26s %9.1f %9.1f", "containerd, CRI on", mb(criOn.uss), mb(criOn.pss))
	t.Logf("BENCH   %-26s %9.1f %9.1f", "containerd, CRI off", mb(criOff.uss), mb(criOff.pss))
	criCost := processMemory{uss: criOn.uss - criOff.uss, pss: criOn.pss - criOff.pss}
	t.Logf("BENCH   %-26s %9.1f %9.1f", "the CRI's own (on - off)", mb(criCost.uss), mb(criCost.pss))
	total := comps.pss + shims.pss + criCost.pss
	t.Logf("BENCH Kubernetes' idle cost, PSS: the seven %.0f MB (%.2fx k3s's ~%d MB server), with their shims and the CRI %.0f MB (%.2fx); USS %.0f MB and %.0f MB",
		mb(comps.pss), mb(comps.pss)/k3sServerMB, k3sServerMB, mb(total), mb(total)/k3sServerMB, mb(comps.uss), mb(comps.uss+shims.uss+criCost.uss))
	t.Logf("BENCH Kubernetes bench took %v", time.Since(begin).Round(time.Second))
}

// kubeStart is one switch-on: when the PUT was answered, when each
// component was first seen ready and the node Ready, from the PUT sent.
type kubeStart struct {
	answered, ready time.Duration
	steps           map[string]time.Duration
}

// switchOnToReady turns the setting on and polls /status until the node
// is Ready, noting when each component is first seen ready.
func switchOnToReady(t *testing.T, in *harness.Instance) kubeStart {
	t.Helper()
	gen := settingsGeneration(t, in)
	r := kubeStart{steps: map[string]time.Duration{}}
	start := time.Now()
	if code, body := in.PutSettings(fmt.Sprintf(`{"generation": %d, "kubernetes": true}`, gen)); code != http.StatusOK {
		t.Fatalf("kubernetes on: %d %s", code, body)
	}
	r.answered = time.Since(start)
	var last string
	for time.Since(start) < 4*time.Minute {
		st := in.Status()
		at := time.Since(start)
		for _, s := range st.Services {
			if _, seen := r.steps[s.Name]; !seen && s.Ready && slices.Contains(kube.Components, s.Name) {
				r.steps[s.Name] = at
			}
		}
		if st.Kubernetes != nil && st.Kubernetes.NodeReady {
			r.ready = at
			return r
		}
		if st.Kubernetes != nil {
			last = st.Kubernetes.State + ": " + st.Kubernetes.Reason
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("the node not Ready within 4 minutes of the switch (last: %s)", last)
	return r
}

// setKubernetes PUTs the setting and waits for its answer.
func setKubernetes(t *testing.T, in *harness.Instance, on bool) {
	t.Helper()
	if code, body := in.PutSettings(fmt.Sprintf(`{"generation": %d, "kubernetes": %t}`, settingsGeneration(t, in), on)); code != http.StatusOK {
		t.Fatalf("kubernetes %t: %d %s", on, code, body)
	}
}

// settingsGeneration is the generation of the settings in force.
func settingsGeneration(t *testing.T, in *harness.Instance) int64 {
	t.Helper()
	code, body := in.Get(http.MethodGet, "/settings")
	var v struct{ Generation int64 }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil {
		t.Fatalf("GET /settings: %d %s", code, body)
	}
	return v.Generation
}

// printKubeSteps prints, for each component, the median time it was
// first seen ready over the switch-ons, in that order.
func printKubeSteps(t *testing.T, starts []kubeStart) {
	var at []map[string]float64
	for _, s := range starts {
		m := map[string]float64{"the PUT answered": ms(s.answered), "the node Ready": ms(s.ready)}
		for n, d := range s.steps {
			m[n+" ready"] = ms(d)
		}
		at = append(at, m)
	}
	var events []string
	for e := range at[0] {
		events = append(events, e)
	}
	slices.SortFunc(events, func(a, b string) int {
		x, _ := medianMs(at, a)
		y, _ := medianMs(at, b)
		return cmpFloat(x, y)
	})
	t.Logf("BENCH   each step, median s since the PUT over the %d switch-ons (/status polled every 250 ms):", len(starts))
	for _, e := range events {
		v, _ := medianMs(at, e)
		t.Logf("BENCH   %7.1f  %s", v/1000, e)
	}
}

// podCount is the number of pods in the cluster, as the API server
// answers ddinit's admin kubeconfig across the link.
func podCount(t *testing.T, in *harness.Instance) int {
	t.Helper()
	_, inner, err := network.Addrs(network.DefaultSubnet)
	if err != nil {
		t.Fatal(err)
	}
	api := kubeapi.New(filepath.Join(in.DataDir, "var/lib/kubernetes/config/admin.conf"), netip.AddrPortFrom(inner.Addr(), kube.APIPort).String())
	defer api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := api.Do(ctx, false, http.MethodGet, "/api/v1/pods", nil, nil)
	if err != nil {
		t.Fatalf("listing the pods: %v", err)
	}
	defer resp.Body.Close()
	var list struct{ Items []json.RawMessage }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("listing the pods: %v", err)
	}
	return len(list.Items)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mb(kb int) float64 { return float64(kb) / 1024 }

// durSpread is the lowest and highest of the rounds' durations.
func durSpread(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("%v–%v", s[0].Round(100*time.Millisecond), s[len(s)-1].Round(100*time.Millisecond))
}

func serviceNamed(st control.Status, name string) control.ServiceStatus {
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	return control.ServiceStatus{}
}

// memoryOf is a process's USS (its private pages) and PSS.
func memoryOf(name string, pid int) processMemory {
	return processMemory{name: name, uss: memKB(pid, "Private_Clean:") + memKB(pid, "Private_Dirty:"), pss: memKB(pid, "Pss:")}
}

// hostPidIn is the pid, as this test sees it, of the process of the pid
// namespace ns that is pid there (/status's pids are PID 1's namespace's):
// the last of its NSpid.
func hostPidIn(t *testing.T, ns string, pid int) int {
	t.Helper()
	for _, p := range harness.InNS(ns) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if f := strings.Fields(v); len(f) > 0 && f[len(f)-1] == strconv.Itoa(pid) {
					return p.Pid
				}
			}
		}
	}
	t.Fatalf("no process is pid %d in %s", pid, ns)
	return 0
}

func cmdline(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func parentPid(pid int) int {
	for _, p := range harness.Processes() {
		if p.Pid == pid {
			return p.PPid
		}
	}
	return 0
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

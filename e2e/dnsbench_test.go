package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestBenchDNS is `make bench` for the DNS forwarder: a query from a
// container through the forwarder against the same query straight to the
// same nameserver (a dnsmasq on the distro's address), in alternating
// rounds in one run.
func TestBenchDNS(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") == "" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	requireEnvironment(t)
	w := newDNSWorld(t)
	w.dnsmasq(distroAddr, "--host-record=intranet.corp,10.20.30.40", "--local=/corp/")
	resolv := resolverFile(t, distroAddr)
	in := start(t, options{netns: w.distro, extra: append([]string{"--resolv-conf", resolv}, asDeployed...)})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	probe := filepath.Join(t.TempDir(), "dnsprobe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/dnsprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v %s", err, out)
	}
	in.docker("create", "--name", "probe", "busybox:local", "sleep", "3600")
	in.docker("cp", probe, "probe:/dnsprobe")
	in.docker("start", "probe")
	medians := map[string][]float64{}
	for round := range 7 {
		for _, server := range []string{nsForwarder, distroAddr} {
			var med, p90 float64
			out := in.docker("exec", "probe", "/dnsprobe", server, "intranet.corp", "300")
			if _, err := fmt.Sscan(out, &med, &p90); err != nil {
				t.Fatalf("probe: %q", out)
			}
			if round > 0 { // the first round warms both paths (ARP, conntrack)
				medians[server] = append(medians[server], med)
			}
		}
	}
	mid := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	f, d := mid(medians[nsForwarder]), mid(medians[distroAddr])
	t.Logf("BENCH DNS query from a container (median of 6 rounds x 300): through ddinit's forwarder %.0f µs, straight to the same nameserver %.0f µs, difference %+.2f ms (target <= +0.2 ms)",
		f, d, (f-d)/1000)
}

package bench

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// TestBenchDNS is `make bench` for the DNS forwarder: a query from a
// container through the forwarder against the same query straight to the
// same nameserver (a dnsmasq on the distro's address), in alternating
// rounds in one run.
func TestBenchDNS(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	w := harness.NewDNSWorld(t)
	w.Dnsmasq(harness.DistroAddr, "--host-record=intranet.corp,10.20.30.40", "--local=/corp/")
	resolv := harness.ResolverFile(t, harness.DistroAddr)
	in := harness.Start(t, harness.Options{Netns: w.Distro, Extra: append([]string{"--resolv-conf", resolv}, asDeployed...)})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	probe := harness.BuildStatic(t, "dnsprobe")
	in.Docker("create", "--name", "probe", "busybox:local", "sleep", "3600")
	in.Docker("cp", probe, "probe:/dnsprobe")
	in.Docker("start", "probe")
	medians := map[string][]float64{}
	for round := range 7 {
		for _, server := range []string{harness.NSForwarder, harness.DistroAddr} {
			var med, p90 float64
			out := in.Docker("exec", "probe", "/dnsprobe", server, "intranet.corp", "300")
			if _, err := fmt.Sscan(out, &med, &p90); err != nil {
				t.Fatalf("probe: %q", out)
			}
			if round > 0 { // the first round warms both paths (ARP, conntrack)
				medians[server] = append(medians[server], med)
			}
		}
	}
	mid := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	f, d := mid(medians[harness.NSForwarder]), mid(medians[harness.DistroAddr])
	t.Logf("BENCH DNS query from a container (median of 6 rounds x 300): through ddinit's forwarder %.0f µs, straight to the same nameserver %.0f µs, difference %+.2f ms (target <= +0.2 ms)",
		f, d, (f-d)/1000)
}

package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// TestBenchLiveSwitch is `make bench` for a live version-pack switch: from
// the switch's start (PUT /version-pack answered: the pack verified, the
// old engine about to stop) to the new engine answering through the
// exposed socket (a client held meanwhile), against a warm boot of the
// same data store, alternated in one run.
func TestBenchLiveSwitch(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	second := harness.TestPack(t, "pack2")
	data, _ := harness.NewDirs(t)
	first := harness.Start(t, harness.Options{DataDir: data, Extra: asDeployed})
	first.WaitPing(60 * time.Second)
	first.Stop()
	var warm, switched []time.Duration
	for i := range 5 {
		in := harness.Start(t, harness.Options{DataDir: data, Extra: asDeployed})
		warm = append(warm, in.WaitPing(60*time.Second))
		to, label := second, true
		if i%2 == 1 {
			to, label = harness.PackISO, false
		}
		begun := in.PutPack(control.UsePack{Path: to, Live: true})
		// Held from the switch's start until the new engine answers.
		harness.WaitUntil(t, 2*time.Minute, "the new engine to answer", func() bool {
			out, err := in.DockerErr("info", "--format", "{{json .Labels}}")
			return err == nil && strings.Contains(out, "pack=2") == label
		})
		switched = append(switched, time.Since(begun))
		in.Stop()
	}
	w, s := median(warm), median(switched)
	t.Logf("BENCH live version-pack switch (switch begun to the new engine answering through the exposed socket), 5 rounds: %v, warm boot %v, ratio %.2f (target <= 1.5; spread of the ratios %s)",
		s.Round(time.Millisecond), w.Round(time.Millisecond), float64(s)/float64(w), ratioSpread(switched, warm))
}

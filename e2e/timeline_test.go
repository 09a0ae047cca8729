package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// A warm boot's timeline in /status and `ddinit status`: ddinit run's
// start down to containerd's, dockerd's container, task and own log
// lines, and the first answer through the exposed socket, in order, and
// covering the time the client waited for that answer.
func TestBootTimeline(t *testing.T) {
	harness.RequireEnvironment(t)
	data, _ := harness.NewDirs(t)
	first := harness.Start(t, harness.Options{DataDir: data})
	first.WaitPing(60 * time.Second)
	first.Stop()
	in := harness.Start(t, harness.Options{DataDir: data})
	waited := in.WaitPing(60 * time.Second)
	steps := in.BootTimeline()
	var order []string
	for _, s := range steps {
		order = append(order, s.Event)
	}
	// Each chain is in the order one event causes the next; dockerd's own
	// lines can come before the answer to its task's start does.
	for _, want := range [][]string{{
		"ddinit run started", "starting PID 1 (new namespaces)", "PID 1 running", "boot phase rootfs done",
		"containerd started", "containerd answering", "dockerd: container ready",
		"dockerd: task created (shim started, runtime create)",
		"dockerd: starting up (its log)", "dockerd: containers loaded (its log)", "dockerd: API listening (its log)",
		"first answer through an exposed socket",
	}, {"dockerd: task created (shim started, runtime create)", "dockerd: task started"}} {
		at := -1
		for _, w := range want {
			i := slices.Index(order, w)
			if i < 0 || i < at {
				t.Fatalf("%q is not in its place in the timeline:\n%s", w, strings.Join(order, "\n"))
			}
			at = i
		}
	}
	last := steps[len(steps)-1]
	if last.Event != "first answer through an exposed socket" {
		t.Fatalf("the timeline does not end with the first answer:\n%s", strings.Join(order, "\n"))
	}
	covered := last.AtMs / float64(waited.Microseconds()) * 1000
	t.Logf("the timeline covers %.0f ms of the %v the client waited (%.0f%%)", last.AtMs, waited.Round(time.Millisecond), covered*100)
	if covered < 0.95 {
		t.Fatalf("the timeline covers %.0f%% of the wait for the first answer; want at least 95%%", covered*100)
	}
	out, err := in.CLI("status")
	if err != nil || !strings.Contains(out, "boot timeline") || !strings.Contains(out, "dockerd: API listening") {
		t.Fatalf("ddinit status: %v\n%s", err, out)
	}
	t.Logf("ddinit status:\n%s", out)
}

package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/timeline"
)

// bootTimeline waits until the boot's timeline ends with the first answer
// through an exposed socket (ddinit run tells PID 1 of it a moment after
// the answer) and holds dockerd's "API listen on" line, and returns it.
// dockerd logs that line just before it serves, so the line's own time is
// before the answer; but the line comes through the shim's pipe and can
// reach PID 1 after ddinit run has told it of the answer, and the
// timeline takes it late (it counts the line's own time).
func (in *instance) bootTimeline() []timeline.Step {
	in.t.Helper()
	var st control.Status
	waitUntil(in.t, 10*time.Second, "the boot's timeline to reach the first answer and dockerd's API line", func() bool {
		_, body := in.get("GET", "/status")
		st = control.Status{}
		json.Unmarshal([]byte(body), &st)
		return slices.ContainsFunc(st.Timeline, func(s timeline.Step) bool { return strings.HasPrefix(s.Event, "first answer") }) &&
			slices.ContainsFunc(st.Timeline, func(s timeline.Step) bool { return s.Event == "dockerd: API listening (its log)" })
	})
	return st.Timeline
}

// A warm boot's timeline in /status and `ddinit status`: ddinit run's
// start down to containerd's, dockerd's container, task and own log
// lines, and the first answer through the exposed socket, in order, and
// covering the time the client waited for that answer.
func TestBootTimeline(t *testing.T) {
	requireEnvironment(t)
	data, _ := newDirs(t)
	first := start(t, options{dataDir: data})
	first.waitPing(60 * time.Second)
	first.stop()
	in := start(t, options{dataDir: data})
	waited := in.waitPing(60 * time.Second)
	steps := in.bootTimeline()
	var order []string
	for _, s := range steps {
		order = append(order, s.Event)
	}
	// Each chain is in the order one event causes the next; dockerd's own
	// lines can come before the answer to its task's start does.
	for _, want := range [][]string{{
		"ddinit run started", "starting PID 1 (new namespaces)", "PID 1 running", "boot phase rootfs done",
		"containerd started", "containerd answering", "dockerd: container ready",
		"dockerd: task created (shim started, runc create)",
		"dockerd: starting up (its log)", "dockerd: containers loaded (its log)", "dockerd: API listening (its log)",
		"first answer through an exposed socket",
	}, {"dockerd: task created (shim started, runc create)", "dockerd: task started"}} {
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
	out, err := in.cli("status")
	if err != nil || !strings.Contains(out, "boot timeline") || !strings.Contains(out, "dockerd: API listening") {
		t.Fatalf("ddinit status: %v\n%s", err, out)
	}
	t.Logf("ddinit status:\n%s", out)
}

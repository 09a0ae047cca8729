package bench

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// TestBenchWake is `make bench` for the engine on demand, in one run on
// one data store: a wake (engine stopped → the first _ping answered
// through the exposed socket) against a warm boot (ddinit started → the
// same first answer) and against dockerd's own start-to-ready time in
// that wake; and the private memory of every process left while the
// engine is stopped.
func TestBenchWake(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	data, _ := harness.NewDirs(t)
	first := harness.Start(t, harness.Options{DataDir: data, Extra: asDeployed})
	first.WaitPing(60 * time.Second)
	first.ImportBusybox()
	first.Stop()

	var warm, wake, thaw, dockerdReady []time.Duration
	var boots, wakes []map[string]float64 // each round's timelines: event → ms
	var stoppedUSS []float64
	for range 3 {
		in := harness.Start(t, harness.Options{DataDir: data, Extra: append([]string{"--idle-pause", "1s", "--idle-stop", "4s"}, asDeployed...)})
		warm = append(warm, in.WaitPing(60*time.Second))
		boots = append(boots, sinceEvent(in.BootTimeline(), "containerd started"))
		ns := in.PidNS()
		harness.WaitUntil(t, 30*time.Second, "the engine to pause", func() bool {
			_, body := in.Get("GET", "/ping")
			return strings.Contains(body, "paused (idle)")
		})
		begin := time.Now()
		if err := harness.Ping(in.Sock); err != nil {
			t.Fatalf("_ping through a paused engine: %v", err)
		}
		thaw = append(thaw, time.Since(begin))
		in.WaitIdle(ns, 30*time.Second)
		time.Sleep(2 * time.Second) // the stop settles
		kb := 0
		for _, p := range harness.InNS(ns) {
			kb += memKB(p.Pid, "Private_Clean:") + memKB(p.Pid, "Private_Dirty:")
		}
		kb += memKB(in.Pid(), "Private_Clean:") + memKB(in.Pid(), "Private_Dirty:")
		stoppedUSS = append(stoppedUSS, float64(kb)/1024)
		begin = time.Now()
		for harness.Ping(in.Sock) != nil {
			if time.Since(begin) > 60*time.Second {
				t.Fatal("no answer through the exposed socket after the idle stop")
			}
		}
		wake = append(wake, time.Since(begin))
		harness.WaitUntil(t, 10*time.Second, "the wake's timeline", func() bool {
			var st control.Status
			_, body := in.Get("GET", "/status")
			json.Unmarshal([]byte(body), &st)
			if len(st.WakeTimeline) == 0 || !strings.HasPrefix(st.WakeTimeline[len(st.WakeTimeline)-1].Event, "engine woken") {
				return false
			}
			wakes = append(wakes, sinceEvent(st.WakeTimeline, "containerd started"))
			return true
		})
		var ready time.Duration
		for _, e := range in.LogEntries() {
			if e["msg"] == "service is ready" && e["service"] == "dockerd" {
				ms, _ := e["ms"].(float64)
				ready = time.Duration(ms * float64(time.Millisecond)) // the last: the wake's
			}
		}
		dockerdReady = append(dockerdReady, ready)
		in.Signal(syscall.SIGTERM)
		in.Exited(90 * time.Second)
	}
	w, b, d := median(wake), median(warm), median(dockerdReady)
	t.Logf("BENCH engine on demand, wake (stopped -> first _ping answered through the exposed socket): %v; warm boot %v, ratio %.2f (target <= 0.9); dockerd's own start-to-ready in the wake %v, difference %+v (target <= +50ms)",
		w.Round(time.Millisecond), b.Round(time.Millisecond), float64(w)/float64(b), d.Round(time.Millisecond), (w - d).Round(time.Millisecond))
	t.Logf("BENCH engine on demand, wake from a pause (frozen -> first _ping answered): %v, %.3fx the warm boot (target <= 0.05)",
		median(thaw).Round(time.Microsecond), float64(median(thaw))/float64(b))
	printSideBySide(t, "the wake's timeline beside the warm boot's, median ms since containerd started", "wake", "boot", wakes, boots)
	slices.Sort(stoppedUSS)
	t.Logf("BENCH engine on demand, private memory (USS) of every process left while stopped: %.1f MB (median of %d; target <= 15 MB)", stoppedUSS[len(stoppedUSS)/2], len(stoppedUSS))
}

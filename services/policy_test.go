package services

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRestartPolicyBacksOffAndCallsACrashLoop(t *testing.T) {
	p := RestartPolicy{Backoff: Backoff{Initial: 100 * time.Millisecond, Max: time.Second, ResetAfter: time.Minute}, CrashLoop: 4}
	want := []struct {
		delay time.Duration
		state string
	}{
		{100 * time.Millisecond, StateRestarting},
		{200 * time.Millisecond, StateRestarting},
		{400 * time.Millisecond, StateRestarting},
		{800 * time.Millisecond, StateFailed},
		{time.Second, StateFailed},
		{time.Second, StateFailed},
	}
	failures := 0
	for i, w := range want {
		var delay time.Duration
		var state string
		// Each run dies at once, as a containerd that cannot start does.
		failures, delay, state = p.Next(failures, 0)
		if failures != i+1 || delay != w.delay || state != w.state {
			t.Fatalf("exit %d: failures %d, delay %s, state %s; want %d, %s, %s", i+1, failures, delay, state, i+1, w.delay, w.state)
		}
	}
	// A run that lasted ResetAfter starts the count over.
	if f, d, st := p.Next(failures, time.Minute); f != 1 || d != 100*time.Millisecond || st != StateRestarting {
		t.Fatalf("after a stable run: %d %s %s", f, d, st)
	}
	// One that did not keeps counting.
	if f, _, st := p.Next(failures, 59*time.Second); f != failures+1 || st != StateFailed {
		t.Fatalf("after a short run: %d %s", f, st)
	}
}

// A probe that stops answering is reported as failing with a growing
// silence, then killed once; one that answers again is reported
// recovered. In a synctest bubble: the silences are the bubble's time,
// exact, not the machine's.
func TestLivenessReportsThenKills(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		answering := true
		var reasons []string
		recovered, killed := 0, make(chan string, 2)
		var killedAt time.Time
		l := liveness{
			timing: LivenessTiming{Period: 10 * time.Millisecond, Timeout: 5 * time.Millisecond, KillAfter: 200 * time.Millisecond},
			check: func(ctx context.Context) error {
				mu.Lock()
				ok := answering
				mu.Unlock()
				if ok {
					return nil
				}
				<-ctx.Done() // a stopped process: no answer at all
				return ctx.Err()
			},
			failing: func(silent, starved time.Duration, err error) {
				mu.Lock()
				reasons = append(reasons, notAnswering(silent, starved, err))
				mu.Unlock()
			},
			recovered: func() { mu.Lock(); recovered++; mu.Unlock() },
			kill:      func(reason string) { killedAt = time.Now(); killed <- reason },
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() { l.run(ctx); close(done) }()

		set := func(v bool) { mu.Lock(); answering = v; mu.Unlock() }
		time.Sleep(50 * time.Millisecond)
		set(false)
		time.Sleep(80 * time.Millisecond) // silent, under KillAfter
		set(true)
		time.Sleep(50 * time.Millisecond)
		synctest.Wait()
		mu.Lock()
		if len(reasons) == 0 || recovered != 1 || len(killed) != 0 {
			t.Fatalf("a short silence: %d failing reports, %d recoveries, %d kills", len(reasons), recovered, len(killed))
		}
		if !strings.Contains(reasons[0], "not answering for") || !strings.Contains(reasons[0], context.DeadlineExceeded.Error()) {
			t.Fatalf("reason %q", reasons[0])
		}
		mu.Unlock()
		set(false)
		silentSince := time.Now()
		reason := <-killed
		if !strings.HasPrefix(reason, "not answering for") {
			t.Fatalf("kill reason %q", reason)
		}
		if after := killedAt.Sub(silentSince); after < 200*time.Millisecond || after > 200*time.Millisecond+2*l.timing.Period {
			t.Fatalf("killed %s after the silence began; want KillAfter (200ms), within a period", after)
		}
		<-done // the loop ends with the kill
		if len(killed) != 0 {
			t.Fatal("killed twice")
		}
	})
}

// The silence counted towards KillAfter leaves out the share of it the
// process spent held back by a busy machine, up to starvedLimit
// KillAfters of silence in all; what it waited before its last answer,
// or while the engine rested, or before its times could first be read,
// is not left out; a process whose times are not known is killed at
// KillAfter. Each case scripts the process's times against the bubble's
// time since the start.
func TestLivenessSparesAStarvedProcess(t *testing.T) {
	// The cluster's timing: every 10 s, 15 s to answer, 80 s of silence.
	const killAfter = 80 * time.Second
	starvedAll := func(e time.Duration) (cpuTimes, bool) { return cpuTimes{waited: e}, true }
	never := func(time.Duration) bool { return false }
	for _, c := range []struct {
		name      string
		times     func(e time.Duration) (cpuTimes, bool)
		answers   func(e time.Duration) bool // before the silence
		resting   func(e time.Duration) bool
		killAfter time.Duration // after the last answer
		says      string
	}{
		{"never waited", func(time.Duration) (cpuTimes, bool) { return cpuTimes{}, true }, never, never, killAfter, ""},
		{"waited half its runnable time", func(e time.Duration) (cpuTimes, bool) { return cpuTimes{ran: e / 2, waited: e / 2}, true }, never, never, 2 * killAfter, "of it waiting for a CPU"},
		{"waited all the time", starvedAll, never, never, starvedLimit * killAfter, "of it waiting for a CPU"},
		// Three threads spinning on two CPUs: they wait a quarter of their
		// runnable time, but together as long as the silence.
		{"threads spinning, waiting a quarter", func(e time.Duration) (cpuTimes, bool) { return cpuTimes{ran: 3 * e, waited: e}, true }, never, never, killAfter * 4 / 3, "of it waiting for a CPU"},
		{"times not known", func(time.Duration) (cpuTimes, bool) { return cpuTimes{}, false }, never, never, killAfter, ""},
		{"waited before its last answer only", func(e time.Duration) (cpuTimes, bool) { return cpuTimes{waited: min(e, 100*time.Second)}, true },
			func(e time.Duration) bool { return e < 100*time.Second }, never, killAfter, ""},
		{"waited before its times could be read", func(e time.Duration) (cpuTimes, bool) {
			if e < 30*time.Second {
				return cpuTimes{}, false // as readCPUTimes fails
			}
			return cpuTimes{waited: time.Hour}, true
		}, never, never, killAfter, ""},
		{"waited while the engine rested", func(e time.Duration) (cpuTimes, bool) { return cpuTimes{waited: min(e, 100*time.Second)}, true },
			never, func(e time.Duration) bool { return e < 100*time.Second }, killAfter, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				begin := time.Now()
				since := func() time.Duration { return time.Since(begin) }
				lastAnswer := begin
				var reasons []string
				var killedAt time.Time
				kill := ""
				l := liveness{
					timing: LivenessTiming{Period: 10 * time.Second, Timeout: 15 * time.Second, KillAfter: killAfter},
					check: func(ctx context.Context) error {
						if c.answers(since()) {
							lastAnswer = time.Now()
							return nil
						}
						<-ctx.Done()
						return ctx.Err()
					},
					times: func() (cpuTimes, bool) { return c.times(since()) },
					resting: func() bool {
						if c.resting(since()) {
							lastAnswer = time.Now() // the silence counts from the rest's end
							return true
						}
						return false
					},
					failing: func(silent, starved time.Duration, err error) {
						reasons = append(reasons, notAnswering(silent, starved, err))
					},
					recovered: func() { t.Error("recovered without an answer") },
					kill:      func(reason string) { killedAt, kill = time.Now(), reason },
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*starvedLimit*killAfter)
				defer cancel()
				l.run(ctx)
				if kill == "" {
					t.Fatalf("never killed; reports: %q", reasons[len(reasons)-3:])
				}
				// Within a period and a probe's timeout of the threshold.
				if after := killedAt.Sub(lastAnswer); after < c.killAfter || after > c.killAfter+2*l.timing.Period+l.timing.Timeout {
					t.Fatalf("killed %s after the last answer; want %s", after, c.killAfter)
				}
				if !strings.HasPrefix(kill, "not answering for") || !strings.Contains(kill, c.says) || len(reasons) == 0 {
					t.Fatalf("kill %q after %d reports; want it to say %q", kill, len(reasons), c.says)
				}
				if last := reasons[len(reasons)-1]; !strings.Contains(last, c.says) || !strings.Contains(last, context.DeadlineExceeded.Error()) {
					t.Fatalf("last report %q; want it to say %q and the probe's error", last, c.says)
				}
			})
		})
	}
	// How a report reads: the wait named from a second on, the error last.
	if got := notAnswering(46*time.Second, 40*time.Second, context.DeadlineExceeded); got != "not answering for 46s, 40s of it waiting for a CPU (context deadline exceeded)" {
		t.Fatalf("reason %q", got)
	}
	if got := notAnswering(80*time.Second, 300*time.Millisecond, nil); got != "not answering for 1m20s" {
		t.Fatalf("kill reason %q", got)
	}
}

func TestLivenessProbeMustGetAnAnswer(t *testing.T) {
	dir := t.TempDir()
	writeDef(t, dir, "a", spec(`["/a"]`, `"io.ddinit.service.liveness":"unix:///run/a.sock"`))
	if _, err := LoadDefinitions(dir); err == nil || !strings.Contains(err.Error(), "must get an answer") {
		t.Fatalf("connect-only liveness probe: %v", err)
	}
	dir = t.TempDir()
	writeDef(t, dir, "a", spec(`["/a"]`, `"io.ddinit.service.liveness":"http://127.0.0.1:10248/healthz","io.ddinit.service.liveness-kill-after":"1m"`))
	defs, err := LoadDefinitions(dir)
	if err != nil || defs[0].Live == nil || defs[0].Live.Addr != "127.0.0.1:10248" || defs[0].LiveTiming.KillAfter != time.Minute {
		t.Fatalf("tcp liveness probe: %+v %v", defs, err)
	}
}

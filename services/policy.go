package services

import "time"

// Backoff is the restart delay: Initial, doubling per consecutive failure
// up to Max; a run that lasted ResetAfter starts over.
type Backoff struct {
	Initial    time.Duration `json:"initial"`
	Max        time.Duration `json:"max"`
	ResetAfter time.Duration `json:"resetAfter"`
}

// DefaultBackoff is 100 ms doubling to 30 s, reset after a stable minute.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: time.Minute}

// Delay is the wait before restart number failures (1-based).
func (b Backoff) Delay(failures int) time.Duration {
	d := b.Initial
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// RestartPolicy is the one restart policy of containerd and of every
// service.
type RestartPolicy struct {
	Backoff
	// CrashLoop is how many consecutive failed runs mark it failed (it is
	// still retried, at the longest delays).
	CrashLoop int
}

// DefaultRestartPolicy backs off from 100 ms to 30 s and calls five
// failed runs in a row a crash loop.
var DefaultRestartPolicy = RestartPolicy{Backoff: DefaultBackoff, CrashLoop: 5}

// Next decides what follows a run that ended after ran, when failures
// runs in a row had failed before it: the new count of consecutive
// failures, the wait before the next start, and the state to show
// meanwhile (restarting, or failed once it is a crash loop). A run that
// lasted ResetAfter clears the count first.
func (p RestartPolicy) Next(failures int, ran time.Duration) (int, time.Duration, string) {
	if ran >= p.ResetAfter {
		failures = 0
	}
	failures++
	state := StateRestarting
	if failures >= p.CrashLoop {
		state = StateFailed
	}
	return failures, p.Delay(failures), state
}

// LivenessTiming says how a liveness probe runs: every Period, each try
// given Timeout to answer; after KillAfter without an answer the process
// is killed and restarted by the restart policy.
type LivenessTiming struct {
	Period    time.Duration `json:"period"`
	Timeout   time.Duration `json:"timeout"`
	KillAfter time.Duration `json:"killAfter"`
}

// DefaultLiveness probes every 5 s, gives each try 2 s, and kills after
// 30 s without an answer.
var DefaultLiveness = LivenessTiming{Period: 5 * time.Second, Timeout: 2 * time.Second, KillAfter: 30 * time.Second}

// or fills the fields t leaves unset from d.
func (t LivenessTiming) or(d LivenessTiming) LivenessTiming {
	if t.Period <= 0 {
		t.Period = d.Period
	}
	if t.Timeout <= 0 {
		t.Timeout = d.Timeout
	}
	if t.KillAfter <= 0 {
		t.KillAfter = d.KillAfter
	}
	return t
}

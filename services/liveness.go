package services

import (
	"context"
	"fmt"
	"time"
)

// starvedLimit bounds how long a process starved of CPU is left silent:
// this many KillAfters, however much of the silence it spent waiting.
const starvedLimit = 4

// liveness watches one running process that has become ready: it asks
// check every Period; while no answer comes it reports for how long
// through failing, and an answer again through recovered; after
// KillAfter without an answer it calls kill once, with the reason, and
// returns. It returns when ctx ends.
//
// The silence counted towards KillAfter leaves out what the process spent
// held back by a busy machine (starvedShare of its own threads' times):
// where the machine cannot run it (a cluster's components all starting at
// once on two CPUs), a slow process is not a hung one, and killing it only
// adds a restart to the load. A deadlocked or stopped process waits for
// no CPU and is killed on time; one that spins waits for a share of what
// it runs, and is killed later by that share; after starvedLimit
// KillAfters of silence it is killed however starved. (Time the host
// takes from the VM's CPUs is not seen from inside, and not left out.)
type liveness struct {
	timing    LivenessTiming
	check     func(ctx context.Context) error
	failing   func(silent, starved time.Duration, err error)
	recovered func()
	kill      func(reason string)
	// resting, when set and true, skips the checks: the process is frozen
	// on purpose, and its silence then is not counted.
	resting func() bool
	// times, when set, reads the process's CPU times (ok false: not
	// known, and nothing is left out).
	times func() (t cpuTimes, ok bool)
}

func (l liveness) run(ctx context.Context) {
	tick := time.NewTicker(l.timing.Period)
	defer tick.Stop()
	var lastAnswer time.Time
	var timesThen cpuTimes
	knownThen := false
	answered := func() {
		lastAnswer = time.Now()
		if l.times != nil {
			timesThen, knownThen = l.times()
		}
	}
	answered()
	answering := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l.resting != nil && l.resting() {
			// Frozen: nothing to read until it runs again; the times are
			// read afresh at its next answer or first silence.
			lastAnswer, knownThen = time.Now(), false
			continue
		}
		try, cancel := context.WithTimeout(ctx, l.timing.Timeout)
		err := l.check(try)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			answered()
			if !answering {
				answering = true
				l.recovered()
			}
			continue
		}
		answering = false
		silent := time.Since(lastAnswer)
		var starved time.Duration
		if l.times != nil {
			switch now, ok := l.times(); {
			case ok && knownThen:
				starved = starvedShare(timesThen, now, silent)
			case ok:
				// Not read at the last answer (or the rest's end): counted
				// from now on.
				timesThen, knownThen = now, true
			}
		}
		if silent-starved >= l.timing.KillAfter || silent >= starvedLimit*l.timing.KillAfter {
			l.kill(notAnswering(silent, starved, nil))
			return
		}
		l.failing(silent, starved, err)
	}
}

// notAnswering is the reason shown while a liveness probe fails (err nil:
// the kill's reason), with how much of the silence the process spent
// waiting for a CPU when that was a second or more.
func notAnswering(silent, starved time.Duration, err error) string {
	s := fmt.Sprintf("not answering for %s", silent.Round(time.Second))
	if starved >= time.Second {
		s += fmt.Sprintf(", %s of it waiting for a CPU", starved.Round(time.Second))
	}
	if err != nil {
		s += fmt.Sprintf(" (%v)", err)
	}
	return s
}

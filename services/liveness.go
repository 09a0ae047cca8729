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
// ready to run with no CPU to run on (waited, its cgroup's CPU pressure):
// on a machine too busy to run it (WSL's VM starved by Windows, a cluster's
// components all starting at once on two CPUs), a slow process is not a
// hung one, and killing it only adds a restart to the load. A hung process
// waits for no CPU (a deadlock sleeps) and is killed as before; one that
// stays silent for starvedLimit KillAfters is killed however starved.
type liveness struct {
	timing    LivenessTiming
	check     func(ctx context.Context) error
	failing   func(silent, starved time.Duration, err error)
	recovered func()
	kill      func(reason string)
	// resting, when set and true, skips the checks: the process is frozen
	// on purpose, and its silence then is not counted.
	resting func() bool
	// waited, when set, is how long the process has waited for a CPU in
	// all (ok false: not known, and nothing is left out).
	waited func() (d time.Duration, ok bool)
}

func (l liveness) run(ctx context.Context) {
	tick := time.NewTicker(l.timing.Period)
	defer tick.Stop()
	var lastAnswer time.Time
	var waitedThen time.Duration
	knownThen := false
	answered := func() {
		lastAnswer = time.Now()
		if l.waited != nil {
			waitedThen, knownThen = l.waited()
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
			answered()
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
		if l.waited != nil {
			switch now, ok := l.waited(); {
			case ok && knownThen:
				starved = min(max(now-waitedThen, 0), silent)
			case ok:
				// Not read at the last answer: counted from now on.
				waitedThen, knownThen = now, true
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

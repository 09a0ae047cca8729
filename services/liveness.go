package services

import (
	"context"
	"fmt"
	"time"
)

// liveness watches one running process that has become ready: it asks
// check every Period; while no answer comes it reports for how long
// through failing, and an answer again through recovered; after
// KillAfter without an answer it calls kill once, with the reason, and
// returns. It returns when ctx ends.
type liveness struct {
	timing    LivenessTiming
	check     func(ctx context.Context) error
	failing   func(silent time.Duration, err error)
	recovered func()
	kill      func(reason string)
	// resting, when set and true, skips the checks: the process is frozen
	// on purpose, and its silence then is not counted.
	resting func() bool
}

func (l liveness) run(ctx context.Context) {
	tick := time.NewTicker(l.timing.Period)
	defer tick.Stop()
	lastAnswer := time.Now()
	answering := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l.resting != nil && l.resting() {
			lastAnswer = time.Now()
			continue
		}
		try, cancel := context.WithTimeout(ctx, l.timing.Timeout)
		err := l.check(try)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			lastAnswer = time.Now()
			if !answering {
				answering = true
				l.recovered()
			}
			continue
		}
		answering = false
		silent := time.Since(lastAnswer)
		if silent >= l.timing.KillAfter {
			l.kill(fmt.Sprintf("not answering for %s", silent.Round(time.Second)))
			return
		}
		l.failing(silent, err)
	}
}

// notAnswering is the reason shown while a liveness probe fails.
func notAnswering(silent time.Duration, err error) string {
	return fmt.Sprintf("not answering for %s (%v)", silent.Round(time.Second), err)
}

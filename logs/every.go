package logs

import (
	"sync"
	"time"
)

// Every lets a warning through at most once an Interval (10 s when
// zero), counting those it held back: a flood of refused connections logs
// one line a while, not one each. Its zero value is ready to use; set
// Interval before it is shared.
type Every struct {
	Interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether to log now and how many were held back since the
// last line logged.
func (e *Every) Allow() (ok bool, suppressed int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	interval := e.Interval
	if interval == 0 {
		interval = 10 * time.Second
	}
	if now := time.Now(); e.last.IsZero() || now.Sub(e.last) >= interval {
		e.last, suppressed, e.suppressed = now, e.suppressed, 0
		return true, suppressed
	}
	e.suppressed++
	return false, 0
}

package logs

import (
	"sync"
	"time"
)

// Every lets a warning through at most once an Interval, counting those
// it held back: a flood of refused connections logs one line a while,
// not one each.
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
	if now := time.Now(); e.last.IsZero() || now.Sub(e.last) >= e.Interval {
		e.last, suppressed, e.suppressed = now, e.suppressed, 0
		return true, suppressed
	}
	e.suppressed++
	return false, 0
}

package logs

import (
	"sync"
	"time"
)

// Line is one line of a service's output.
type Line struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Text   string    `json:"text"`
}

// Ring keeps the last lines of a service's output and lets readers follow
// new ones.
type Ring struct {
	mu    sync.Mutex
	lines []Line
	next  int
	full  bool
	subs  map[chan Line]struct{}
}

// NewRing keeps up to n lines.
func NewRing(n int) *Ring {
	return &Ring{lines: make([]Line, n), subs: map[chan Line]struct{}{}}
}

// Add appends a line; followers that cannot keep up lose it rather than
// slow the service down.
func (r *Ring) Add(l Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = l
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	for ch := range r.subs {
		select {
		case ch <- l:
		default:
		}
	}
}

// Tail returns the last n lines, oldest first (all of them when n <= 0).
func (r *Ring) Tail(n int) []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := r.next
	if r.full {
		count = len(r.lines)
	}
	if n <= 0 || n > count {
		n = count
	}
	out := make([]Line, 0, n)
	for i := count - n; i < count; i++ {
		idx := i
		if r.full {
			idx = (r.next + i) % len(r.lines)
		}
		out = append(out, r.lines[idx])
	}
	return out
}

// Follow returns a channel of lines added from now on and a function that
// stops following.
func (r *Ring) Follow() (<-chan Line, func()) {
	ch := make(chan Line, 256)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		if _, ok := r.subs[ch]; ok {
			delete(r.subs, ch)
			close(ch)
		}
		r.mu.Unlock()
	}
}

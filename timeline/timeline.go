package timeline

import (
	"bytes"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Mark is one event: what happened and when it was seen.
type Mark struct {
	Event string    `json:"event"`
	At    time.Time `json:"at"`
}

// Step is a mark as a timeline shows it: its time since the first mark,
// and since the mark before it.
type Step struct {
	Event  string  `json:"event"`
	AtMs   float64 `json:"atMs"`
	StepMs float64 `json:"stepMs"`
}

// Recorder keeps one boot's marks. An event is kept once, at its first
// time (a service restarted later does not move its boot's step); once
// closed (the boot answered), marks of events after the close are
// ignored — one seen before it but told later (a log line on its way
// through a pipe) still counts.
type Recorder struct {
	mu     sync.Mutex
	marks  []Mark
	closed time.Time
}

// Mark records event now.
func (r *Recorder) Mark(event string) { r.MarkAt(event, time.Now()) }

// MarkAt records event at a time seen elsewhere (another process, a
// log line's own time stamp).
func (r *Recorder) MarkAt(event string, at time.Time) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed.IsZero() && at.After(r.closed) || slices.ContainsFunc(r.marks, func(m Mark) bool { return m.Event == event }) {
		return
	}
	r.marks = append(r.marks, Mark{event, at})
}

// Add merges marks recorded elsewhere.
func (r *Recorder) Add(marks []Mark) {
	for _, m := range marks {
		r.MarkAt(m.Event, m.At)
	}
}

// Close ends the timeline now: marks of later events are ignored.
func (r *Recorder) Close() { r.CloseAt(time.Now()) }

// CloseAt ends the timeline at a time: marks of events after it, kept
// already (seen here before the close was told) or to come, are not the
// timeline's. A timeline closes once.
func (r *Recorder) CloseAt(at time.Time) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.closed.IsZero() {
		r.closed = at
		r.marks = slices.DeleteFunc(r.marks, func(m Mark) bool { return m.At.After(at) })
	}
	r.mu.Unlock()
}

// Marks are the marks so far, in time order.
func (r *Recorder) Marks() []Mark {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	out := slices.Clone(r.marks)
	r.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Mark) int { return a.At.Compare(b.At) })
	return out
}

// Steps are the marks in time order, each timed from the first and from
// the one before it.
func Steps(marks []Mark) []Step {
	var out []Step
	for i, m := range marks {
		s := Step{Event: m.Event, AtMs: ms(m.At.Sub(marks[0].At))}
		if i > 0 {
			s.StepMs = ms(m.At.Sub(marks[i-1].At))
		}
		out = append(out, s)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logTime is the time stamp of a logrus text line (dockerd's and
// containerd's: time="2026-11-30T23:41:29.123456789Z").
var logTime = regexp.MustCompile(`time="([^"]+)"`)

// LineTime is the time a log line says it was written, or false when it
// says none.
func LineTime(line string) (time.Time, bool) {
	m := logTime.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, m[1])
	return t, err == nil
}

// Milestone is a log line that marks an event: the first line of a run
// containing Contains marks Event, at the line's own time stamp when it
// has one.
type Milestone struct{ Contains, Event string }

// WatchLines passes what is written on to w and marks the milestones its
// lines show. It holds at most one partial line, of up to 4 KiB.
func WatchLines(w io.WriteCloser, milestones []Milestone, mark func(event string, at time.Time)) io.WriteCloser {
	if len(milestones) == 0 {
		return w
	}
	return &lineWatch{w: w, left: slices.Clone(milestones), mark: mark}
}

type lineWatch struct {
	w       io.WriteCloser
	left    []Milestone
	partial []byte
	long    bool // the line under way outgrew partial: skipped to its end
	mark    func(string, time.Time)
}

func (l *lineWatch) Write(p []byte) (int, error) {
	if len(l.left) > 0 {
		l.scan(p)
	}
	return l.w.Write(p)
}

func (l *lineWatch) scan(p []byte) {
	for len(p) > 0 && len(l.left) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if l.long || len(l.partial)+len(p) > maxLine {
				l.partial, l.long = l.partial[:0], true
				return
			}
			l.partial = append(l.partial, p...)
			return
		}
		line := string(append(l.partial, p[:i]...))
		long := l.long || len(line) > maxLine
		l.partial, l.long, p = l.partial[:0], false, p[i+1:]
		if long {
			continue // only part of it was seen: it marks nothing
		}
		for j := 0; j < len(l.left); j++ {
			if strings.Contains(line, l.left[j].Contains) {
				at, ok := LineTime(line)
				if !ok {
					at = time.Now()
				}
				l.mark(l.left[j].Event, at)
				l.left = slices.Delete(l.left, j, j+1)
				j--
			}
		}
	}
}

// maxLine is the longest line looked at; a longer one marks nothing.
const maxLine = 4096

func (l *lineWatch) Close() error { return l.w.Close() }

package timeline

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// Marks from two sources merge in time order; an event keeps its first
// time; nothing is marked after Close; each step is the time between two
// marks.
func TestRecorderMergesAndKeepsFirst(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	var r Recorder
	r.MarkAt("pid1", t0.Add(10*time.Millisecond))
	r.Add([]Mark{{"run started", t0}, {"pid1", t0.Add(time.Second)}})
	r.MarkAt("answer", t0.Add(250*time.Millisecond))
	r.MarkAt("after the answer, seen before the close was told", t0.Add(260*time.Millisecond))
	r.CloseAt(t0.Add(250 * time.Millisecond))
	r.MarkAt("late", t0.Add(time.Hour))
	r.MarkAt("seen before, told after", t0.Add(200*time.Millisecond))
	steps := Steps(r.Marks())
	want := []Step{{"run started", 0, 0}, {"pid1", 10, 10}, {"seen before, told after", 200, 190}, {"answer", 250, 50}}
	if len(steps) != len(want) {
		t.Fatalf("steps %+v", steps)
	}
	for i := range want {
		if steps[i] != want[i] {
			t.Fatalf("step %d: %+v, want %+v", i, steps[i], want[i])
		}
	}
	var none *Recorder
	none.Mark("x") // a nil recorder marks nothing and does not panic
	if none.Marks() != nil {
		t.Fatal("a nil recorder has marks")
	}
}

// Milestones are found in lines however the writes split them, at the
// line's own time stamp, once each; what is written passes through whole.
func TestWatchLinesAcrossWrites(t *testing.T) {
	var out bytes.Buffer
	got := map[string]time.Time{}
	w := WatchLines(nopCloser{&out}, []Milestone{{"API listen on", "listening"}, {"Starting up", "up"}}, func(e string, at time.Time) {
		if _, dup := got[e]; dup {
			t.Fatalf("%s marked twice", e)
		}
		got[e] = at
	})
	log := "time=\"2026-11-30T23:41:29.123456789Z\" level=info msg=\"Starting up\"\n" +
		"no time stamp here\n" +
		"time=\"2026-11-30T23:41:30.5Z\" level=info msg=\"API listen on /run/docker.sock\"\n" +
		"time=\"2026-11-30T23:41:31Z\" level=info msg=\"API listen on /run/other.sock\"\n"
	for i := 0; i < len(log); i += 7 {
		w.Write([]byte(log[i:min(i+7, len(log))]))
	}
	if out.String() != log {
		t.Fatalf("passed on: %q", out.String())
	}
	if want := time.Date(2026, 11, 30, 23, 41, 29, 123456789, time.UTC); !got["up"].Equal(want) {
		t.Fatalf("up at %v, want %v", got["up"], want)
	}
	if want := time.Date(2026, 11, 30, 23, 41, 30, 500000000, time.UTC); !got["listening"].Equal(want) {
		t.Fatalf("listening at %v, want %v", got["listening"], want)
	}
	// A line without a time stamp is marked when it is seen; a line too
	// long to look at whole marks nothing, even with a milestone at its
	// end after the part that overflowed, and the next line is looked at.
	var out2 bytes.Buffer
	before := time.Now()
	w2 := WatchLines(nopCloser{&out2}, []Milestone{{"ready", "ready"}, {"API listen on", "late"}}, func(e string, at time.Time) { got[e] = at })
	w2.Write([]byte("head of a long line "))
	w2.Write([]byte(strings.Repeat("x", 5000)))
	w2.Write([]byte(" API listen on\nready\n"))
	if got["ready"].Before(before) {
		t.Fatalf("ready at %v", got["ready"])
	}
	if _, ok := got["late"]; ok {
		t.Fatal("a milestone in the overflowed part of a long line was marked")
	}
}

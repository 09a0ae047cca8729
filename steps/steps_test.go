package steps

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/sirupsen/logrus"
)

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.Out = io.Discard
	return l
}

// A table runs in order; a failure stops it; its undos run newest first,
// the failed step's too; an optional failure is passed; each undo runs
// once.
func TestRunAndUndo(t *testing.T) {
	var log []string
	step := func(name string, fail, optional bool) Step[*[]string] {
		return Step[*[]string]{Name: name, Optional: optional, Do: func(l *[]string) (func() error, error) {
			*l = append(*l, "do "+name)
			undo := func() error { *l = append(*l, "undo "+name); return nil }
			if fail {
				return undo, errors.New(name + " failed")
			}
			return undo, nil
		}}
	}
	r := &Runner{Log: quiet(), What: "step"}
	err := Run(r, []Step[*[]string]{step("a", false, false), step("b", true, true), step("c", true, false), step("d", false, false)}, &log)
	if err == nil || err.Error() != "c failed" {
		t.Fatalf("%v", err)
	}
	r.Undo()
	r.Undo()
	want := []string{"do a", "do b", "do c", "undo c", "undo b", "undo a"}
	if !slices.Equal(log, want) {
		t.Fatalf("%q, want %q", log, want)
	}
}

// What is taken is undone by whoever took it, not by the runner.
func TestTake(t *testing.T) {
	var log []string
	r := &Runner{Log: quiet(), What: "step"}
	do := func(name string) Step[int] {
		return Step[int]{Name: name, Undoing: "undoing " + name, Do: func(int) (func() error, error) {
			return func() error { log = append(log, name); return nil }, nil
		}}
	}
	var begun []string
	r.Begin = func(name, doing string) { begun = append(begun, doing) }
	Run(r, []Step[int]{do("held")}, 0)
	held := r.Take()
	Run(r, []Step[int]{do("boot")}, 0)
	r.Undo()
	held.Run()
	if !slices.Equal(log, []string{"boot", "held"}) || !slices.Contains(begun, "undoing boot") {
		t.Fatalf("%q %q", log, begun)
	}
}

// An undo that fails is told, and the ones before it still run.
func TestUndoGoesOnPastAFailure(t *testing.T) {
	ran := 0
	r := &Runner{Log: quiet(), What: "step"}
	Run(r, []Step[int]{
		{Name: "a", Do: func(int) (func() error, error) { return func() error { ran++; return nil }, nil }},
		{Name: "b", Do: func(int) (func() error, error) { return func() error { return errors.New("stuck") }, nil }},
	}, 0)
	if err := r.Undo(); err == nil || ran != 1 {
		t.Fatalf("%v %d", err, ran)
	}
}

// Every goroutine of a group has ended when Stop returns.
func TestGroupStopWaits(t *testing.T) {
	var g Group
	ended := make(chan struct{}, 3)
	for range 3 {
		g.Go(func(ctx context.Context) { <-ctx.Done(); ended <- struct{}{} })
	}
	g.Stop()
	if len(ended) != 3 {
		t.Fatalf("%d of 3 ended by Stop", len(ended))
	}
}

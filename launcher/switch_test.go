package launcher

import (
	"errors"
	"io"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

func quietLauncher() *launcher {
	log := logrus.New()
	log.Out = io.Discard
	l := &launcher{log: logrus.NewEntry(log)}
	p := &fakePID1{}
	l.hold = newHolder(p.ask, log)
	p.h = l.hold
	return l
}

// A pack request whose PID 1 went (it closed the control sockets, or
// exited) while the pack was hashed saves nothing, claims no switch, and
// is not answered: nothing is left that would hold the next engine's
// clients for ever.
func TestPackRequestOfAGonePID1(t *testing.T) {
	l := quietLauncher()
	gen := l.replacing.generation
	l.pid1Gone()
	saved := false
	err := l.saveChoice(gen, true, func() error { saved = true; return nil })
	if !errors.Is(err, errdefs.ErrConflict) || saved || l.replacing.switchTo != "" {
		t.Fatalf("a live request of a PID 1 gone: err %v, saved %v, switch %q", err, saved, l.replacing.switchTo)
	}
	l.answerPack(gen, nil, wire.PackAnswer{Packs: control.PackState{Next: &control.PackRef{Path: "/p.iso"}}}, true)
	if l.replacing.switchTo != "" || l.hold.switching() {
		t.Fatalf("an answer to a PID 1 gone began a switch: %q", l.replacing.switchTo)
	}
}

// One switch at a time, and no other choice while it is under way; a live
// one is refused once ddinit is stopping.
func TestPackRequestsDuringASwitch(t *testing.T) {
	l := quietLauncher()
	gen := l.replacing.generation
	if err := l.saveChoice(gen, true, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, live := range []bool{true, false} {
		if err := l.saveChoice(gen, live, func() error { t.Fatal("saved during a switch"); return nil }); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("a request (live %v) during a switch: %v", live, err)
		}
	}
	l = quietLauncher()
	l.replacing.stopAsked = true
	if err := l.saveChoice(l.replacing.generation, true, func() error { return nil }); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("a live request while stopping: %v", err)
	}
	if err := l.saveChoice(l.replacing.generation, false, func() error { return nil }); err != nil {
		t.Fatalf("a choice for the next boot while stopping: %v", err)
	}
}

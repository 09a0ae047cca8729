package initd

import (
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/sirupsen/logrus"
)

// A step that fails stops the launch; what every step before it (and it)
// set up is undone, newest first, once.
func TestLaunchStepsUndoInReverse(t *testing.T) {
	quiet := logrus.New()
	quiet.Out = io.Discard
	l := &launcher{log: logrus.NewEntry(quiet)}
	var did, undid []string
	step := func(name string, fail bool) launchStep {
		return launchStep{name: name, do: func(*launcher, int, map[string]string) (func(), error) {
			did = append(did, name)
			undo := func() { undid = append(undid, name) }
			if fail {
				return undo, errors.New(name + " failed")
			}
			return undo, nil
		}}
	}
	none := launchStep{name: "nothing to undo", do: func(*launcher, int, map[string]string) (func(), error) {
		did = append(did, "nothing to undo")
		return nil, nil
	}}
	err := l.runSteps([]launchStep{step("network", false), none, step("follow", false), step("expose", true), step("settle", false)}, 1, nil)
	if err == nil || err.Error() != "expose failed" {
		t.Fatalf("the failing step's error: %v", err)
	}
	if !slices.Equal(did, []string{"network", "nothing to undo", "follow", "expose"}) {
		t.Fatalf("steps run: %v", did)
	}
	l.undoAll()
	l.undoAll() // once only
	if !slices.Equal(undid, []string{"expose", "follow", "network"}) {
		t.Fatalf("undone: %v, want expose, follow, network", undid)
	}
}

// The launch is named once each step, in the order it needs them: the
// control sockets before PID 1 (which serves them), held with the exposed
// sockets for the whole life (a PID 1 replaced keeps them), the network
// before the sockets it carries, the exposure before the settling that
// waits for it.
func TestLaunchStepsOrder(t *testing.T) {
	var names []string
	for _, table := range [][]launchStep{holdSteps, startSteps, socketSteps} {
		for _, s := range table {
			names = append(names, s.name)
		}
	}
	if !slices.Equal(names, []string{"lock data store", "open log", "control sockets", "exposed sockets", "start PID 1", "network", "dns", "follow PID 1", "follow drives and devices", "expose sockets", "engine on demand", "settle"}) {
		t.Fatalf("launch steps: %v", names)
	}
}

// An optional step that fails is told and passed: the launch goes on, and
// what it did set up is undone with the rest.
func TestOptionalLaunchStepFailsAndGoesOn(t *testing.T) {
	quiet := logrus.New()
	quiet.Out = io.Discard
	l := &launcher{log: logrus.NewEntry(quiet)}
	var did, undid []string
	steps := []launchStep{
		{name: "network", optional: true, do: func(*launcher, int, map[string]string) (func(), error) {
			did = append(did, "network")
			return func() { undid = append(undid, "network") }, errors.New("no link")
		}},
		{name: "expose", do: func(*launcher, int, map[string]string) (func(), error) {
			did = append(did, "expose")
			return func() { undid = append(undid, "expose") }, nil
		}},
	}
	if err := l.runSteps(steps, 1, nil); err != nil {
		t.Fatalf("an optional step's failure stopped the launch: %v", err)
	}
	l.undoAll()
	if !slices.Equal(did, []string{"network", "expose"}) || !slices.Equal(undid, []string{"expose", "network"}) {
		t.Fatalf("did %v, undid %v", did, undid)
	}
}

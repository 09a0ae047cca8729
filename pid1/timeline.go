package pid1

import (
	"time"

	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/wire"
)

// DockerdMilestones are the lines of dockerd's log that mark the steps of
// its own start, in the boot's timeline (and the bench's bare baseline).
var DockerdMilestones = []timeline.Milestone{
	{Contains: "Starting up", Event: "dockerd: starting up (its log)"},
	{Contains: "Loading containers: start.", Event: "dockerd: loading containers (its log)"},
	{Contains: "Loading containers: done.", Event: "dockerd: containers loaded (its log)"},
	{Contains: "Daemon has completed initialization", Event: "dockerd: initialization completed (its log)"},
	{Contains: "API listen on", Event: "dockerd: API listening (its log)"},
}

// startTimeline begins the boot's timeline with ddinit run's marks and
// PID 1's own start.
func (in *pid1) startTimeline() {
	in.bootMarks = &timeline.Recorder{}
	in.bootMarks.Add(in.handoff.Marks)
	in.bootMarks.MarkAt("PID 1 running", in.started)
	in.engineMarks.Store(in.bootMarks)
}

// addMarks takes ddinit run's marks; its first answer through an exposed
// socket ends the boot's timeline.
func (in *pid1) addMarks(marks []timeline.Mark) {
	in.bootMarks.Add(marks)
	for _, m := range marks {
		if m.Event == wire.FirstAnswerMark {
			in.bootMarks.CloseAt(m.At)
		}
	}
}

// markEngine is the supervisor's marks (containerd, dockerd's container,
// task and log): into the boot's timeline, or the wake's.
func (in *pid1) markEngine(event string, at time.Time) {
	in.engineMarks.Load().MarkAt(event, at)
}

// startWakeTimeline begins the timeline of a wake after an idle stop.
func (in *pid1) startWakeTimeline() *timeline.Recorder {
	in.bootMarks.Close() // a first answer after the wake is the wake's, not the boot's
	r := &timeline.Recorder{}
	r.Mark("wake asked (by ddinit run)")
	in.wakeMarks.Store(r)
	in.engineMarks.Store(r)
	return r
}

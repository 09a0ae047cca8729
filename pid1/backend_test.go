package pid1

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/logs"
)

// convertersRunning counts the goroutines that turn a followed log's lines
// into the control API's.
func convertersRunning() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "backend.Logs.func")
}

// A follower that goes before it has taken every line (a client gone with
// a burst still queued for it, or a hand-over) leaves nothing behind: the
// /logs handler stops without draining the channel.
func TestFollowedLogStoppedMidBurstEndsItsConverter(t *testing.T) {
	in := &pid1{ownLog: logs.NewRing(1000)}
	before := convertersRunning()
	_, ch, stop, err := backend{in}.Logs("", 0, true)
	if err != nil || ch == nil {
		t.Fatalf("Logs(follow): %v, channel %v", err, ch)
	}
	for i := 0; i < 200; i++ { // more than the channel between them holds
		in.ownLog.Add(logs.Line{Time: time.Now(), Text: "burst"})
	}
	// The channel full: the converter, with lines still to send, waits on
	// it when the follower stops.
	for deadline := time.Now().Add(10 * time.Second); len(ch) < cap(ch); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the burst never filled the follower's channel (%d of %d)", len(ch), cap(ch))
		}
	}
	stop()
	stop() // twice is harmless
	deadline := time.Now().Add(2 * time.Second)
	for convertersRunning() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := convertersRunning() - before; n > 0 {
		t.Fatalf("%d converter goroutine(s) still waiting to send after the follower stopped", n)
	}
}

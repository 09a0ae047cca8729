package harness

import (
	"testing"
	"time"
)

// WaitUntil polls cond every 50 ms until it holds, failing t (saying
// what it waited for) after d.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

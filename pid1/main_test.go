package pid1

import (
	"testing"

	"go.uber.org/goleak"
)

// No test leaves a goroutine behind, but the reaper's loop, which lives
// as long as PID 1 does (TestTrustOnceRunsIptablesOnce starts one).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/ddinit/ddinit/pid1.NewReaper.func1"))
}

package idleheap

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/sirupsen/logrus"
)

// settleAfter is how long after the boot the heap it needed is returned:
// the services have had time to come up.
const settleAfter = time.Second

// Settle returns the heap the boot needed once it has settled, and
// reports false when ctx ended first.
func Settle(ctx context.Context, log logrus.FieldLogger) bool {
	t := time.NewTimer(settleAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	debug.FreeOSMemory()
	log.Debug("boot heap returned to the kernel")
	return true
}

// How often the free heap is looked at, and how much of it is worth
// returning.
const (
	checkEvery  = 10 * time.Second
	returnBytes = 256 << 10
)

// Watch returns, every checkEvery until ctx ends, the heap a burst of
// work freed once there is enough of it.
func Watch(ctx context.Context) {
	free := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(free)
		if free[0].Value.Kind() == metrics.KindUint64 && free[0].Value.Uint64() >= returnBytes {
			debug.FreeOSMemory()
		}
	}
}

package network

import (
	"github.com/ddinit/ddinit/internal/testutil"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// enterNewNetns locks the calling goroutine to its thread and moves the
// thread into a new network namespace (what /proc/sys/net, netlink and the
// commands it starts then see); leave moves it back and unlocks it. The
// test skips where it cannot be done.
func enterNewNetns(t *testing.T) (ns netns.NsHandle, leave func()) {
	t.Helper()
	testutil.RequiresRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err = netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Skipf("cannot make a network namespace: %v", err)
	}
	return ns, func() {
		netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
	}
}

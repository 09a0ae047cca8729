package hostports

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
)

// No test leaves a goroutine behind. The test binary is also the helper
// process of the root tests: one that listens in a namespace and is no
// container's (listenHelper).
func TestMain(m *testing.M) {
	if ns := os.Getenv(helperNetns); ns != "" {
		os.Exit(listenHelper(ns, os.Getenv(helperAddr)))
	}
	goleak.VerifyTestMain(m)
}

// The helper's environment: the namespace to listen in (a path) and the
// TCP address.
const (
	helperNetns = "HOSTPORTS_TEST_HELPER_NETNS"
	helperAddr  = "HOSTPORTS_TEST_HELPER_ADDR"
)

// listenHelper listens on addr in the namespace at nsPath, says so on
// stdout, and holds the socket until its stdin closes.
func listenHelper(nsPath, addr string) int {
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(nsPath)
	if err == nil {
		err = netns.Set(ns)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: enter", nsPath, err)
		return 1
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: listen", addr, err)
		return 1
	}
	defer l.Close()
	fmt.Println("listening")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// quietLog is a logger whose lines the test can read, and nobody else.
func quietLog() (*logrus.Logger, *test.Hook) {
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	return log, hook
}

// within fails the test when ch gives nothing in time: a wait for
// something that happens at once, bounded so a bug fails rather than
// hangs.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing came", what)
		panic("unreachable")
	}
}

// warnings are the warnings logged, by message.
func warnings(hook *test.Hook) []string {
	var out []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			out = append(out, e.Message)
		}
	}
	return out
}

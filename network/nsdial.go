package network

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// dialIn opens a connection to addr from a socket made in the network
// namespace ns: there 127.0.0.1 and ::1 are the namespace's own loopback,
// where dockerd publishes a binding to a loopback address. The socket is
// made on a thread that enters the namespace for the dial and leaves it
// after; the socket stays in the namespace it was made in.
func dialIn(ctx context.Context, ns netns.NsHandle, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("this thread's network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("enter the engine's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if serr := netns.Set(orig); serr != nil {
			// The thread stays locked: it ends with this goroutine
			// rather than serve others from the wrong namespace.
			done <- result{c, err}
			return
		}
		runtime.UnlockOSThread()
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

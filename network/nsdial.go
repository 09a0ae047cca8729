package network

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// InNamespace runs fn on a thread that enters the network namespace ns
// for it and leaves it after: sockets fn makes stay in ns. A thread that
// cannot go back ends with its goroutine rather than serve others from
// the wrong namespace.
func InNamespace(ns netns.NsHandle, fn func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter the engine's network namespace: %w", err)
			return
		}
		fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		done <- nil
	}()
	return <-done
}

// DialIn opens a connection to addr from a socket made in the network
// namespace ns: there 127.0.0.1 and ::1 are the namespace's own loopback,
// where dockerd publishes a binding to a loopback address.
func DialIn(ctx context.Context, ns netns.NsHandle, network, addr string) (c net.Conn, err error) {
	if nerr := InNamespace(ns, func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	}); nerr != nil {
		return nil, nerr
	}
	return c, err
}

// ListenIn opens a UDP socket and a TCP listener on addr in the network
// namespace at nsPath (/proc/PID/ns/net): what ddinit run serves to the
// engine's namespace from the distro's side.
func ListenIn(nsPath, addr string) (net.PacketConn, net.Listener, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, nil, fmt.Errorf("the engine's network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	var pc net.PacketConn
	var l net.Listener
	if nerr := InNamespace(ns, func() {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return
		}
		if l, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
		}
	}); nerr != nil {
		return nil, nil, nerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s in the engine's network namespace: %w", addr, err)
	}
	return pc, l, nil
}

// ListenTCPIn opens a TCP listener on addr in the network namespace at
// nsPath (/proc/PID/ns/net).
func ListenTCPIn(nsPath, addr string) (net.Listener, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("the engine's network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	var l net.Listener
	if nerr := InNamespace(ns, func() { l, err = net.Listen("tcp", addr) }); nerr != nil {
		return nil, nerr
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s in the engine's network namespace: %w", addr, err)
	}
	return l, nil
}

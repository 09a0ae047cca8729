package bridgeroutes

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// subscribeFunc subscribes to the distro's route changes as
// netlink.RouteSubscribeWithOptions does: updates on ch until done is
// closed or the subscription fails (then ch is closed), errors to onErr.
type subscribeFunc func(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error

// watchRoutes calls kick for every change of the distro's routes until
// ctx ends, so that a route that appears later wins over ours at once. A
// subscription that fails (the kernel drops messages when the socket's
// buffer fills: ENOBUFS ends it) is made again after a backoff (from
// 100 ms, doubling to 2 s; from 100 ms again once one was made), and kick
// is called each time one is made: a change in between is missed, so the
// routes are read again.
func watchRoutes(ctx context.Context, subscribe subscribeFunc, kick func(), log logrus.FieldLogger) {
	delay := 100 * time.Millisecond
	for {
		ch := make(chan netlink.RouteUpdate, 64)
		done := make(chan struct{})
		errs := make(chan error, 1)
		onErr := func(err error) {
			select {
			case errs <- err:
			default: // one is waiting already: a read of the routes follows it
			}
		}
		if err := subscribe(ch, done, onErr); err != nil {
			close(done)
			log.WithError(err).Warn("cannot follow the distro's route changes; trying again")
		} else {
			delay = 100 * time.Millisecond
			kick()
			if !follow(ctx, ch, errs, kick, log) {
				close(done)
				for range ch { // until its reader ends, which closes it
				}
				return
			}
			close(done)
			for range ch {
			}
			log.Debug("the distro's route changes ended; following them again")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// follow kicks for each update on ch until ch closes (true: subscribe
// again) or ctx ends (false). An error that does not end the
// subscription may still mean lost messages: it kicks too.
func follow(ctx context.Context, ch <-chan netlink.RouteUpdate, errs <-chan error, kick func(), log logrus.FieldLogger) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case u, ok := <-ch:
			if !ok {
				return true
			}
			// The local table holds the distro's own addresses, which
			// plan does not count.
			if u.Table != unix.RT_TABLE_LOCAL {
				kick()
			}
		case err := <-errs:
			if ctx.Err() == nil {
				log.WithError(err).Debug("following the distro's route changes")
			}
			kick()
		}
	}
}

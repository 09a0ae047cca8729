package bridgeroutes

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeSub is one subscription the fake netlink made: the test sends its
// updates and ends it.
type fakeSub struct {
	ch     chan<- netlink.RouteUpdate
	onErr  func(error)
	once   sync.Once
	closed atomic.Bool // done was closed
}

// end closes the updates as netlink's reader does when its socket fails
// or done is closed.
func (s *fakeSub) end() { s.once.Do(func() { close(s.ch) }) }

// A subscription that cannot be made is tried again with a growing
// backoff; one made asks for a pass at once (changes in between were
// missed), each change does, but the local table's do not; one that
// ends is made again and the backoff starts over; ctx's end ends it all.
func TestWatchRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		var (
			mu    sync.Mutex
			at    []time.Duration
			kicks atomic.Int32
		)
		subs := make(chan *fakeSub, 1)
		subscribe := func(ch chan<- netlink.RouteUpdate, done <-chan struct{}, onErr func(error)) error {
			mu.Lock()
			at = append(at, time.Since(start))
			n := len(at)
			mu.Unlock()
			if n <= 2 {
				return errors.New("no netlink today")
			}
			s := &fakeSub{ch: ch, onErr: onErr}
			go func() { <-done; s.closed.Store(true); s.end() }()
			subs <- s
			return nil
		}
		returned := make(chan struct{})
		go func() {
			watchRoutes(ctx, subscribe, func() { kicks.Add(1) }, discardLog)
			close(returned)
		}()
		expect := func(want int32, what string) {
			t.Helper()
			synctest.Wait()
			if got := kicks.Load(); got != want {
				t.Fatalf("%s: %d passes asked for, want %d", what, got, want)
			}
		}

		s := <-subs
		mu.Lock()
		if want := []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}; !slices.Equal(at, want) {
			t.Errorf("subscribed at %v, want %v", at, want)
		}
		mu.Unlock()
		expect(1, "subscribed")
		s.ch <- netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Table: unix.RT_TABLE_MAIN}}
		expect(2, "a route added")
		s.ch <- netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Table: unix.RT_TABLE_LOCAL}}
		expect(2, "an address's local route")
		s.onErr(errors.New("wrong sender portid"))
		expect(3, "an error that may have lost a change")

		s.end()
		s = <-subs
		mu.Lock()
		if got, want := at[3]-at[2], 100*time.Millisecond; got != want {
			t.Errorf("subscribed again %v after the last one, want %v (the backoff starts over)", got, want)
		}
		mu.Unlock()
		expect(4, "subscribed again")

		cancel()
		<-returned
		if !s.closed.Load() {
			t.Error("the subscription is still open after ctx's end")
		}
	})
}

package kubeports

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
)

// api is what the follower asks of the API server (apiClient; a fake in
// the tests of its timing).
type api interface {
	list(ctx context.Context) (rv string, items []service, err error)
	watch(ctx context.Context, rv string, each func(event)) error
	patchIngress(ctx context.Context, namespace, name string) error
}

// follower keeps the listeners in step with the cluster's LoadBalancer
// Services: a list, then a watch from its resourceVersion; a watch the
// API server ended is opened again from the last resourceVersion seen,
// one that broke (or whose resourceVersion is too old) means a new list.
// A watch, not a poll: a Service's ports open and close as the API server
// tells of it, and an idle cluster costs one open request.
type follower struct {
	api      api
	node     netip.Addr // where kube-proxy serves the NodePorts
	reserved portKey    // the API server's
	publish  func(map[portKey]target)
	log      logrus.FieldLogger
	// ready: the API server answers its readiness check (PID 1 says);
	// until then, failing to reach it is expected, and not warned about.
	ready *atomic.Bool
	// nudge ends a wait before the next try (the API server became
	// ready).
	nudge <-chan struct{}
	// backoff is the wait before try n of a run of failures (n ≥ 1).
	backoff func(n int) time.Duration

	svcs      map[string]service
	patched   map[string]string // Service → the resourceVersion patched, not patched again
	noted     map[string]bool   // the notes (ports left out) logged, while they last
	warn      logs.Every
	patchWarn logs.Every
}

// backoff is the wait before the n-th try of a run of failures: the first
// again at once (a watch's end is routine), then from 250 ms doubling to
// 10 s.
func backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 250 * time.Millisecond
	for i := 2; i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

// run follows the Services until ctx ends.
func (f *follower) run(ctx context.Context) {
	f.svcs, f.patched, f.noted = map[string]service{}, map[string]string{}, map[string]bool{}
	fails := 0
	for {
		if fails > 0 && !f.wait(ctx, f.backoff(fails)) {
			return
		}
		rv, items, err := f.api.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			f.failed("list the Services", err)
			continue
		}
		f.replace(ctx, items)
		// Watch from rv until the stream breaks: a watch the API server
		// ended is opened again from the last resourceVersion seen.
		for {
			err = f.api.watch(ctx, rv, func(ev event) {
				fails = 0
				if v := ev.Service.Metadata.ResourceVersion; v != "" {
					rv = v
				}
				f.apply(ctx, ev)
			})
			if ctx.Err() != nil {
				return
			}
			fails++
			if err != nil {
				break
			}
			// Ended with nothing told: wait, as after a failure (an API
			// server that ends every watch at once must not be asked
			// in a tight loop).
			if !f.wait(ctx, f.backoff(fails)) {
				return
			}
		}
		if errors.Is(err, errGone) {
			f.log.WithError(err).Debug("listing the Services again")
		} else {
			f.failed("watch the Services", err)
		}
	}
}

// wait waits d, less if nudged; false: ctx ended.
func (f *follower) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-f.nudge:
	}
	return true
}

func (f *follower) failed(what string, err error) {
	log := f.log.WithError(err).WithField("what", what)
	if !f.ready.Load() {
		log.Debug("the Kubernetes API server is not reached yet; trying again")
		return
	}
	if ok, held := f.warn.Allow(); ok {
		log.WithField("alsoFailed", held).Warn("cannot follow the Kubernetes Services: their ports in the distro may be out of date; trying again")
	}
}

// replace makes items every Service there is.
func (f *follower) replace(ctx context.Context, items []service) {
	f.svcs = map[string]service{}
	for _, s := range items {
		f.svcs[s.name()] = s
	}
	for n := range f.patched {
		if _, ok := f.svcs[n]; !ok {
			delete(f.patched, n)
		}
	}
	f.changed(ctx)
}

// apply takes in one change.
func (f *follower) apply(ctx context.Context, ev event) {
	s := ev.Service
	switch ev.Type {
	case "ADDED", "MODIFIED":
		f.svcs[s.name()] = s
	case "DELETED":
		delete(f.svcs, s.name())
		delete(f.patched, s.name())
	default: // BOOKMARK: a resourceVersion, nothing changed
		return
	}
	f.changed(ctx)
}

// changed publishes what the Services now ask for, logs once each port
// left out, and sets the ingress of each LoadBalancer Service that does
// not say localhost yet.
func (f *follower) changed(ctx context.Context) {
	want, notes := wantOf(f.svcs, f.node, f.reserved)
	f.publish(want)
	// Each note is logged when it appears, not again while it stays.
	noted := map[string]bool{}
	for _, n := range notes {
		if !f.noted[n] {
			f.log.Warn(n)
		}
		noted[n] = true
	}
	f.noted = noted
	for n, s := range f.svcs {
		if !s.isLoadBalancer() || s.atLocalhost() {
			continue
		}
		if rv, ok := f.patched[n]; ok && rv == s.Metadata.ResourceVersion {
			continue
		}
		if err := f.api.patchIngress(ctx, s.Metadata.Namespace, s.Metadata.Name); err != nil {
			// Tried again with the next change or list.
			if ok, held := f.patchWarn.Allow(); ok {
				f.log.WithError(err).WithFields(logrus.Fields{"service": n, "alsoFailed": held}).Warn("cannot set the Service's load balancer ingress to localhost (kubectl shows <pending>)")
			}
			continue
		}
		// Not again for this resourceVersion: the change comes back as
		// an event (a list or an event from before it may come first).
		f.patched[n] = s.Metadata.ResourceVersion
		f.log.WithField("service", n).Debug("the Service's load balancer ingress set to localhost")
	}
}

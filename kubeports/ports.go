package kubeports

import (
	"context"
	"errors"
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// ports are the listeners on the distro's loopback addresses: what set
// last asked for, brought about by run, which tries again every
// retryEvery a port it could not open (held by another process).
type ports struct {
	log        logrus.FieldLogger
	loopbacks  []string // 127.0.0.1, ::1
	retryEvery time.Duration
	// applied, when set, is told what is open after each pass (tests).
	applied func(open map[portKey]target)

	mu   sync.Mutex
	want map[portKey]target
	kick chan struct{}

	open map[portKey]*listener // run's alone
}

// listener is one key's ports, one per loopback address.
type listener struct {
	target target
	on     map[string]*transport.Port // by loopback address
	// warned are the addresses whose failure was logged (once until the
	// key closes); absent, those this distro does not have (no IPv6
	// loopback): not tried again.
	warned, absent map[string]bool
	// unreachable: a connection that could not reach the target was
	// logged.
	unreachable atomic.Bool
}

func newPorts(loopbacks []string, retryEvery time.Duration, log logrus.FieldLogger) *ports {
	return &ports{log: log, loopbacks: loopbacks, retryEvery: retryEvery, kick: make(chan struct{}, 1), open: map[portKey]*listener{}}
}

// set makes want the listeners to have; run brings them about.
func (p *ports) set(want map[portKey]target) {
	p.mu.Lock()
	p.want = want
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default: // a pass is due already, and reads the newest want
	}
}

// run applies each set, and tries again a port it could not open, until
// ctx ends; then it closes every listener (and what they carry).
func (p *ports) run(ctx context.Context) {
	defer func() {
		for k := range p.open {
			p.closeKey(k)
		}
	}()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-retry:
		}
		retry = nil
		if p.apply() {
			retry = time.After(p.retryEvery)
		}
	}
}

// apply closes what is no longer wanted and opens what is, on every
// loopback address; pending says a port could not be opened (and will be
// tried again).
func (p *ports) apply() (pending bool) {
	p.mu.Lock()
	want := p.want
	p.mu.Unlock()
	current := map[portKey]target{}
	for k, l := range p.open {
		current[k] = l.target
	}
	closing, opening := diff(current, want)
	for _, k := range closing {
		p.closeKey(k)
	}
	for _, k := range opening {
		p.open[k] = &listener{target: want[k], on: map[string]*transport.Port{}, warned: map[string]bool{}, absent: map[string]bool{}}
	}
	for k, l := range p.open {
		for _, addr := range p.loopbacks {
			if l.on[addr] != nil || l.absent[addr] {
				continue
			}
			if !p.listen(k, l, addr) {
				pending = true
			}
		}
	}
	if p.applied != nil {
		open := map[portKey]target{}
		for k, l := range p.open {
			if len(l.on) > 0 {
				open[k] = l.target
			}
		}
		p.applied(maps.Clone(open))
	}
	return pending
}

// listen opens k on the loopback address addr; false: not now (taken),
// try again.
func (p *ports) listen(k portKey, l *listener, addr string) bool {
	at := net.JoinHostPort(addr, strconv.Itoa(k.Port))
	log := p.log.WithFields(logrus.Fields{"port": k.Proto + "/" + at, "to": l.target.Dial, "for": l.target.Owner})
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, k.Proto, l.target.Dial)
		// Why a connection is closed at once is logged once a listener:
		// the cluster may still be starting.
		if err != nil && l.unreachable.CompareAndSwap(false, true) {
			log.WithError(err).Warn("a connection to a Kubernetes port cannot reach it (is the cluster up?)")
		}
		return c, err
	}
	port, err := transport.ForwardPort(k.Proto, at, dial, log)
	switch {
	case err == nil:
		l.on[addr] = port
		log.Info("kubernetes port published in the distro")
		return true
	case isV6(addr) && (errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)):
		// Best effort: a distro without IPv6 has no ::1 to serve.
		l.absent[addr] = true
		log.WithError(err).Debug("no IPv6 loopback in the distro: the port is served on IPv4 only")
		return true
	}
	if !l.warned[addr] {
		l.warned[addr] = true
		hint := "or give the Service another port"
		if l.target.Owner == apiServerOwner {
			hint = "until then the kubeconfig offered to the distros does not reach the cluster"
		}
		log.WithError(err).Warn("a kubernetes port is not published in the distro: something else holds it there. " +
			"Free it (`ss -ltnup 'sport = :" + strconv.Itoa(k.Port) + "'` names what listens) and it is published within seconds; " + hint)
	}
	return false
}

// closeKey closes k's ports, and the connections they carry.
func (p *ports) closeKey(k portKey) {
	l := p.open[k]
	delete(p.open, k)
	for addr, port := range l.on {
		port.Close()
		p.log.WithFields(logrus.Fields{"port": k.Proto + "/" + net.JoinHostPort(addr, strconv.Itoa(k.Port)), "for": l.target.Owner}).Info("kubernetes port closed in the distro")
	}
}

func isV6(addr string) bool {
	ip := net.ParseIP(addr)
	return ip != nil && ip.To4() == nil
}

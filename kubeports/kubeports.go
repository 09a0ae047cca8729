package kubeports

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/kubeapi"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// apiServerOwner is whom the API server's port is for, in the log.
const apiServerOwner = "the Kubernetes API server"

// DefaultAPIPort is where the API server is published in the distro, as
// the kubeconfig offered names it (https://127.0.0.1:6443).
const DefaultAPIPort = 6443

// State is the cluster as PID 1 reports it (wire.Kube), its kubeconfig's
// path resolved by the caller.
type State struct {
	// On: the cluster runs or is starting; Ready: its API server answers.
	On, Ready bool
	// APIServer is the API server's host:port, reached from the distro
	// (across the link); its host is the node's, where NodePorts are.
	APIServer string
	// Kubeconfig is the admin kubeconfig's path ("": none yet).
	Kubeconfig string
}

// Options are where the cluster is published.
type Options struct {
	// Shared is the tmpfs every distro shares (WSLShared), and
	// SharedKubeconfig the path below it where the admin kubeconfig is
	// offered (config.SharedKubeconfig). Without either, none is.
	Shared, SharedKubeconfig string
	// APIPort is the API server's port on the distro's loopback
	// (DefaultAPIPort when 0).
	APIPort int
	Log     logrus.FieldLogger

	// What the tests change: the loopback addresses served (127.0.0.1
	// and ::1), how often a port found taken is tried again, the docker
	// group, the follower's backoff, and a look at each pass over the
	// ports.
	loopbacks  []string
	retryEvery time.Duration
	group      func() (int, error)
	backoff    func(int) time.Duration
	applied    func(map[portKey]target)
}

// Publisher publishes the cluster in the distro while it is on (package
// doc). Its methods are safe to call from several goroutines.
type Publisher struct {
	o Options

	mu    sync.Mutex
	run   *session // nil while off
	offer offer
}

// session is what is published for one API server: its ports, and the
// follower of its Services.
type session struct {
	state  State
	ready  atomic.Bool
	nudge  chan struct{}
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New is a Publisher with nothing published yet.
func New(o Options) *Publisher {
	if o.APIPort == 0 {
		o.APIPort = DefaultAPIPort
	}
	if o.loopbacks == nil {
		o.loopbacks = []string{"127.0.0.1", "::1"}
	}
	if o.retryEvery == 0 {
		o.retryEvery = 5 * time.Second
	}
	if o.group == nil {
		o.group = transport.LookupDockerGroup
	}
	if o.backoff == nil {
		o.backoff = backoff
	}
	return &Publisher{o: o, offer: offer{shared: o.Shared, rel: o.SharedKubeconfig, group: o.group, log: o.Log}}
}

// Set brings what is published in line with s: while On, the API server's
// port, the LoadBalancer Services' ports and the kubeconfig offered (a new
// API server address starts them anew); otherwise nothing.
func (p *Publisher) Set(s State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !s.On {
		if p.run != nil {
			p.o.Log.Info("the Kubernetes ports in the distro closed")
		}
		p.stop()
		if err := p.offer.withdraw(); err != nil {
			p.o.Log.WithError(err).Warn("the Kubernetes kubeconfig was not withdrawn from the distros")
		}
		return
	}
	if r := p.run; r != nil && (r.state.APIServer != s.APIServer || r.state.Kubeconfig != s.Kubeconfig) {
		p.stop()
	}
	if p.run == nil && s.APIServer != "" { // "": not known yet
		if err := p.start(s); err != nil {
			p.o.Log.WithError(err).Error("Kubernetes is on, but not published in the distro")
		}
	}
	if r := p.run; r != nil && !r.ready.Swap(s.Ready) && s.Ready {
		select {
		case r.nudge <- struct{}{}: // its Services can be read now
		default:
		}
	}
	if s.Kubeconfig != "" {
		if err := p.offer.put(s.Kubeconfig); err != nil {
			p.o.Log.WithError(err).Warn("the distros are offered no Kubernetes kubeconfig")
		}
	}
}

// Close withdraws everything (PID 1 went, or ddinit run ends, or a run
// before this one crashed leaving a kubeconfig offered); a Set after it
// publishes again.
func (p *Publisher) Close() {
	p.Set(State{})
}

// start publishes the API server of s, and follows its Services.
func (p *Publisher) start(s State) error {
	api, err := netip.ParseAddrPort(s.APIServer)
	if err != nil {
		return fmt.Errorf("the API server's address %q: %w", s.APIServer, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &session{state: s, nudge: make(chan struct{}, 1), cancel: cancel}
	log := p.o.Log
	ps := newPorts(p.o.loopbacks, p.o.retryEvery, log)
	ps.applied = p.o.applied
	apiKey := portKey{Proto: "tcp", Port: p.o.APIPort}
	apiTarget := target{Dial: api.String(), Owner: apiServerOwner}
	publish := func(services map[portKey]target) {
		want := map[portKey]target{apiKey: apiTarget}
		for k, t := range services {
			want[k] = t
		}
		ps.set(want)
	}
	publish(nil)
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		ps.run(ctx)
	}()
	if s.Kubeconfig != "" {
		client := &apiClient{kubeapi.New(s.Kubeconfig, api.String())}
		f := &follower{api: client, node: api.Addr(), reserved: apiKey, publish: publish, log: log, ready: &r.ready, nudge: r.nudge, backoff: p.o.backoff}
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			defer client.Close()
			f.run(ctx)
		}()
	}
	p.run = r
	log.WithField("apiServer", s.APIServer).Info("Kubernetes is on: the API server and the LoadBalancer Services are published in the distro")
	return nil
}

// stop closes every port of the session, and what they carry.
func (p *Publisher) stop() {
	r := p.run
	if r == nil {
		return
	}
	p.run = nil
	r.cancel()
	r.done.Wait()
}

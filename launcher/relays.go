package launcher

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// The corporate network: the settings' proxy and trusted CAs reach the
// engine (dockerd's environment, the pack's CA bundle; PID 1 puts both in
// place before dockerd's start), and the proxy reaches new containers and
// builds (the docker API proxy in ddinit run adds it). A proxy on the
// distro's loopback is reached through a relay ddinit run serves on the
// namespace's end of the link, connecting from the distro's loopback.

// relays (ddinit run) serves the relays of the proxy plan in force, and
// keeps the variables new containers and builds get.
type relays struct {
	mu      sync.Mutex
	serving map[wire.Relay]*transport.Forwarder
	wg      sync.WaitGroup
	env     map[string]string
}

// applyProxy serves the plan's relays (closing those it no longer has)
// and keeps its variables for new containers and builds.
func (r *relays) apply(plan wire.ProxyPlan, pid int, log logrus.FieldLogger) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env = plan.Env
	if r.serving == nil {
		r.serving = map[wire.Relay]*transport.Forwarder{}
	}
	for k, f := range r.serving {
		if !slices.Contains(plan.Relays, k) {
			f.Listener.Close()
			delete(r.serving, k)
			log.WithField("relay", k.Listen).Info("proxy relay closed")
		}
	}
	for _, k := range plan.Relays {
		if r.serving[k] != nil {
			continue
		}
		ln, err := network.ListenTCPIn(fmt.Sprintf("/proc/%d/ns/net", pid), k.Listen)
		if err != nil {
			log.WithError(err).WithField("proxy", k.Dial).Error("the proxy on the distro's loopback cannot be reached from the engine")
			continue
		}
		dial := k.Dial
		f := &transport.Forwarder{
			Name:     "proxy relay",
			Listener: ln,
			// From the distro's side: its loopback, where the proxy listens.
			Dial: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", dial)
			},
			Log: log,
		}
		r.serving[k] = f
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			f.Serve(context.Background())
		}()
		log.WithFields(logrus.Fields{"listen": k.Listen, "proxy": k.Dial}).Info("proxy on the distro's loopback relayed into the namespace")
	}
}

// proxyEnv is the variables new containers and builds get (none without
// a proxy).
func (r *relays) proxyEnv() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.env
}

// close closes every relay and waits for them.
func (r *relays) close() {
	r.mu.Lock()
	for k, f := range r.serving {
		f.Listener.Close()
		delete(r.serving, k)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

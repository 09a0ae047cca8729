package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/dnsforward"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/wire"
	"github.com/vishvananda/netlink"
)

// How containers resolve names: the namespace's resolver file names only
// ddinit's DNS forwarder, on the namespace's end of the link (not a
// loopback address, so dockerd hands it to containers as it is, and its
// embedded DNS forwards to it). `ddinit run` serves the forwarder from the
// distro's side: it asks the distro's nameservers as the distro's file
// names them now — its loopback too — and answers the two names above.

// dnsForwarder is the forwarder ddinit run serves, and how it reports.
type dnsForwarder struct {
	fwd    *dnsforward.Forwarder
	server *dnsforward.Server
	listen []string
	names  *localNames
	stop   context.CancelFunc
	done   chan struct{}
}

// serveDNS (ddinit run) opens the forwarder's sockets in PID 1's network
// namespace, on the link's addresses, and serves them.
func (l *launcher) serveDNS(pid int) (func(), error) {
	l.mu.Lock()
	link := l.net.link
	l.mu.Unlock()
	root := fmt.Sprintf("/proc/%d/root", pid)
	fail := func(err error) (func(), error) {
		l.fallBackResolvConf(root)
		l.tellDNS(&control.DNSState{Error: "no DNS forwarder (" + err.Error() + "): containers got a copy of the distro's resolver file"})
		return nil, err
	}
	if link == nil {
		return fail(errors.New("no link to the namespace"))
	}
	addrs := []netip.Addr{link.InnerAddr.Addr()}
	if link.InnerAddr6.IsValid() {
		addrs = append(addrs, link.InnerAddr6.Addr())
	}
	log := l.log.WithField("component", "dns")
	l.mu.Lock()
	names := l.net.names
	l.mu.Unlock()
	d := &dnsForwarder{names: names, done: make(chan struct{})}
	var packets []net.PacketConn
	var listeners []net.Listener
	closeAll := func() {
		for _, p := range packets {
			p.Close()
		}
		for _, ln := range listeners {
			ln.Close()
		}
	}
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a, 53).String()
		pc, ln, err := network.ListenIn(fmt.Sprintf("/proc/%d/ns/net", pid), addr)
		if err != nil {
			closeAll()
			return fail(err)
		}
		packets, listeners = append(packets, pc), append(listeners, ln)
		d.listen = append(d.listen, addr)
	}
	d.fwd = &dnsforward.Forwarder{
		ResolvConf: l.cfg.ResolvConf,
		Self:       addrs,
		Local:      d.names.lookup,
		Log:        log,
		// The distro's search and options follow into the namespace's
		// file: containers created from now on get them.
		OnChange: func(c dnsforward.Conf) {
			if err := placeResolvConf(root, dnsforward.NamespaceFile(link.InnerAddr.Addr(), c)); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.WithError(err).Warn("the namespace's resolver file does not follow the distro's search and options")
			}
		},
	}
	d.server = dnsforward.Serve(d.fwd, packets, listeners)
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	go func() {
		defer close(d.done)
		l.reportDNS(ctx, d)
	}()
	log.WithField("listen", strings.Join(d.listen, " ")).Info("DNS forwarder serving the namespace")
	return func() {
		cancel()
		<-d.done
		d.server.Close()
	}, nil
}

// fallBackResolvConf gives the namespace a copy of the distro's resolver
// file when there is no forwarder: names resolve as the distro's servers
// are now, and a server on the distro's loopback cannot be reached.
func (l *launcher) fallBackResolvConf(root string) {
	b, err := dnsforward.ReadFile(l.cfg.ResolvConf)
	if err == nil {
		err = placeResolvConf(root, b)
	}
	if err != nil {
		l.log.WithError(err).Warn("the namespace keeps a resolver file naming a forwarder that is not there")
		return
	}
	for _, s := range dnsforward.ParseConf(b).Servers {
		if s.Addr().IsLoopback() {
			l.log.WithField("nameserver", s.Addr().String()).Warn("the distro's nameserver is on its loopback, which the namespace cannot reach without ddinit's forwarder")
		}
	}
}

// reportDNS tells PID 1 (for /status) how the forwarder fares, each
// second it changed.
func (l *launcher) reportDNS(ctx context.Context, d *dnsForwarder) {
	var last *control.DNSState
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := d.state()
		if (last == nil || !reflect.DeepEqual(*st, *last)) && l.tellDNS(st) {
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tellDNS sends PID 1 the forwarder's state; it reports whether it went.
func (l *launcher) tellDNS(st *control.DNSState) bool {
	return l.tellPID1(wire.Message{Kind: wire.DNSState, DNS: st})
}

// placeResolvConf replaces the namespace's /etc/resolv.conf (the rename
// replaces a symlink the base image may have there, not its target).
func placeResolvConf(root string, b []byte) error {
	return atomicfile.Write(filepath.Join(root, "etc/resolv.conf"), b, 0o644)
}

func (d *dnsForwarder) state() *control.DNSState {
	s := d.fwd.Stats()
	st := &control.DNSState{Listen: d.listen, Servers: s.Servers, Answered: s.Answered, Failed: s.Failed, Error: s.FileError}
	if f := s.LastFailure; f != nil {
		st.LastFailure = &control.DNSFailure{Name: f.Name, Reason: f.Reason, At: f.At}
	}
	return st
}

// localNames answers host.docker.internal and gateway.docker.internal
// from the distro's routes and the link, looked at again once a second.
type localNames struct {
	link *network.Link

	mu      sync.Mutex
	host    []netip.Addr
	checked time.Time
}

func (n *localNames) lookup(name string) ([]netip.Addr, bool) {
	switch name {
	case network.GatewayName:
		// Where every WSL distro's listening services are reached: the
		// distro's end of the link.
		addrs := []netip.Addr{n.link.HostAddr.Addr()}
		if n.link.HostAddr6.IsValid() {
			addrs = append(addrs, n.link.HostAddr6.Addr())
		}
		return addrs, true
	case network.HostName:
		return n.windowsHost(), true
	}
	return nil, false
}

// windowsHost is the Windows host as the distro reaches it in WSL's NAT
// mode: the distro's default gateway (a VPN's route changes it); without
// one, the distro itself.
func (n *localNames) windowsHost() []netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Since(n.checked) < time.Second && n.host != nil {
		return n.host
	}
	n.checked = time.Now()
	n.host = []netip.Addr{n.link.HostAddr.Addr()}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return n.host
	}
	// The default route itself (0.0.0.0/0), not a VPN's halves of the
	// address space (0.0.0.0/1, 128.0.0.0/1); the preferred one first.
	best := -1
	for _, r := range routes {
		if r.Gw == nil || r.Dst != nil && !isDefault(r.Dst) {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok && (best < 0 || r.Priority < best) {
			n.host, best = []netip.Addr{a}, r.Priority
		}
	}
	return n.host
}

// hosts is what a container that does not ask the forwarder (it sets its
// own DNS, or the daemon's) gets in /etc/hosts for the two names.
func (n *localNames) hosts() map[string]string {
	m := map[string]string{}
	for _, name := range []string{network.HostName, network.GatewayName} {
		if addrs, _ := n.lookup(name); len(addrs) > 0 {
			m[name] = addrs[0].String()
		}
	}
	return m
}

// daemonSetsDNS reports whether daemon.json, as dockerd reads it from the
// data store, names DNS servers for every container ("dns").
func daemonSetsDNS(path string) bool {
	// Read on each create: bounded, so a daemon.json that is a FIFO, or a
	// data store that hangs, holds no request.
	b, err := regularfile.ReadWithin(path, maxDaemonJSON, 2*time.Second)
	if err != nil {
		return false
	}
	var doc struct {
		DNS []string `json:"dns"`
	}
	return json.Unmarshal(b, &doc) == nil && len(doc.DNS) > 0
}

// maxDaemonJSON bounds the daemon.json read for its "dns": dockerd's own
// is a few KB.
const maxDaemonJSON = 4 << 20

func isDefault(dst *net.IPNet) bool {
	ones, _ := dst.Mask.Size()
	return ones == 0
}

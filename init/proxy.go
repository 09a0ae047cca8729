package initd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// The corporate network: the settings' proxy and trusted CAs reach the
// engine (dockerd's environment, the pack's CA bundle; PID 1 puts both in
// place before dockerd's start), and the proxy reaches new containers and
// builds (the docker API proxy in ddinit run adds it). A proxy on the
// distro's loopback is reached through a relay ddinit run serves on the
// namespace's end of the link, connecting from the distro's loopback.

// caBundle is the version pack's CA bundle, which Go (dockerd, containerd)
// reads as the system roots.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// maxCABundleBytes bounds what is read of the CA bundle: Debian's is some
// 200 KB; with the settings' CAs (a document of at most
// settings.MaxDocumentBytes) it stays well under this.
const maxCABundleBytes = 16 << 20

// proxyPlan is how the proxy reaches the namespace: the variables dockerd,
// containers and builds get (upper-case names), and the relays ddinit run
// serves for a proxy on the distro's loopback.
type proxyPlan struct {
	Env    map[string]string `json:"env,omitempty"`
	Relays []relay           `json:"relays,omitempty"`
}

// relay is a proxy on the distro's loopback (Dial) as the namespace
// reaches it (Listen, on the link's address in the namespace).
type relay struct {
	Listen string `json:"listen"`
	Dial   string `json:"dial"`
}

// planProxy makes the plan for p, where inner is the namespace's end of
// the link and subnet the link's. NO_PROXY always names what must never
// go through a proxy: the loopback, the link, the two names ddinit
// answers; then the user's.
func planProxy(p *settings.Proxy, inner netip.Addr, subnet netip.Prefix) (proxyPlan, error) {
	var plan proxyPlan
	if p == nil || p.HTTP == "" && p.HTTPS == "" {
		return plan, nil
	}
	plan.Env = map[string]string{}
	for name, raw := range map[string]string{"HTTP_PROXY": p.HTTP, "HTTPS_PROXY": p.HTTPS} {
		if raw == "" {
			continue
		}
		u, err := settings.ParseProxyURL(raw)
		if err != nil {
			return proxyPlan{}, err
		}
		if isLoopback(u.Hostname()) {
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
			}
			r := relay{Listen: netip.AddrPortFrom(inner, mustPort(port)).String(), Dial: net.JoinHostPort(u.Hostname(), port)}
			if i := slices.IndexFunc(plan.Relays, func(o relay) bool { return o.Listen == r.Listen }); i >= 0 && plan.Relays[i] != r {
				return proxyPlan{}, fmt.Errorf("two proxies on the distro's loopback on port %s (%s, %s): the namespace reaches one per port", port, plan.Relays[i].Dial, r.Dial)
			} else if i < 0 {
				plan.Relays = append(plan.Relays, r)
			}
			u.Host = r.Listen
		}
		plan.Env[name] = u.String()
	}
	noProxy := []string{"localhost", "127.0.0.0/8", "::1", subnet.Masked().String(), HostName, GatewayName}
	for _, n := range strings.Split(p.NoProxy, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(noProxy, n) {
			noProxy = append(noProxy, n)
		}
	}
	plan.Env["NO_PROXY"] = strings.Join(noProxy, ",")
	return plan, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func mustPort(p string) uint16 {
	var n uint16
	fmt.Sscan(p, &n)
	return n
}

// envList is the plan's variables for a process: NAME=value, sorted.
func (p proxyPlan) envList() []string {
	var out []string
	for name, v := range p.Env {
		out = append(out, name+"="+v)
	}
	slices.Sort(out)
	return out
}

// launcherMessage is what PID 1 tells ddinit run (on the socket drives
// changes come the other way on): the proxy plan in force.
type launcherMessage struct {
	Proxy *proxyPlan `json:"proxy,omitempty"`
	// Engine answers an engine request of ddinit run's.
	Engine *engineReply `json:"engine,omitempty"`
	// IdleStop is how long the engine may be unused before it is stopped
	// (nanoseconds; 0: never), from the settings or the config.
	IdleStop  *time.Duration `json:"idleStop,omitempty"`
	IdlePause *time.Duration `json:"idlePause,omitempty"`
	// EngineRunning says PID 1 stopped or started the engine.
	EngineRunning *bool `json:"engineRunning,omitempty"`
	// Pack passes on a PUT /version-pack.
	Pack *packRequest `json:"pack,omitempty"`
}

// tellLauncher sends ddinit run a message; it reports whether it went.
func (in *pid1) tellLauncher(msg launcherMessage) bool {
	in.mu.Lock()
	conn := in.launcher
	in.mu.Unlock()
	if conn == nil {
		return false
	}
	b, _ := json.Marshal(msg) // plain fields always encode
	if _, _, err := conn.WriteMsgUnix(b, nil, nil); err != nil {
		in.log.WithError(err).Warn("a message to ddinit run was not sent")
		return false
	}
	return true
}

// setEnvironment (PID 1) puts the proxy and the CAs in place for
// dockerd's next start, and tells ddinit run the plan.
func (in *pid1) setEnvironment(env settings.Environment) error {
	_, inner, err := network.Addrs(in.cfg.Subnet)
	if err != nil {
		return err
	}
	plan, err := planProxy(env.Proxy, inner.Addr(), inner.Masked())
	if err != nil {
		return err
	}
	if err := in.writeCABundle(env.TrustedCAs); err != nil {
		return err
	}
	in.mu.Lock()
	in.dockerdEnv = plan.envList()
	in.mu.Unlock()
	if !in.tellLauncher(launcherMessage{Proxy: &plan}) {
		return errors.New("ddinit run was not told the proxy")
	}
	return nil
}

// serviceEnv is what a service gets besides its definition's
// environment: dockerd, the proxy.
func (in *pid1) serviceEnv(service string) []string {
	if service != "dockerd" {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dockerdEnv
}

// writeCABundle makes the CA bundle the version pack's plus cas (the
// pack's alone when there are none). The root is a fresh overlay each
// boot, so the pack's own is read once and kept.
func (in *pid1) writeCABundle(cas []string) error {
	in.mu.Lock()
	pack, read := in.packBundle, in.packBundleRead
	in.mu.Unlock()
	if !read {
		b, err := regularfile.Read(caBundle, maxCABundleBytes)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the version pack's CA bundle: %w", err)
		}
		pack = b
		in.mu.Lock()
		in.packBundle, in.packBundleRead = b, true
		in.mu.Unlock()
	}
	want := slices.Clip(pack)
	for _, c := range cas {
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(want, '\n')
		}
		want = append(want, strings.TrimSpace(c)+"\n"...)
	}
	if cur, err := regularfile.Read(caBundle, maxCABundleBytes); err == nil && string(cur) == string(want) {
		return nil
	}
	if len(want) == 0 {
		return nil // no bundle in the pack, and none to add
	}
	if err := os.MkdirAll("/etc/ssl/certs", 0o755); err != nil {
		return err
	}
	return atomicfile.Write(caBundle, want, 0o644)
}

// relays (ddinit run) serves the relays of the proxy plan in force, and
// keeps the variables new containers and builds get.
type relays struct {
	mu      sync.Mutex
	serving map[relay]*transport.Forwarder
	wg      sync.WaitGroup
	env     map[string]string
}

// followPID1 (ddinit run) reads what PID 1 tells it until ctx ends.
func (l *launcher) followPID1(ctx context.Context, pid int) {
	log := l.log.WithField("component", "pid1")
	l.mu.Lock()
	gen := l.generation
	conn := l.drives
	l.mu.Unlock()
	// Unblocked by a deadline in the past: the socket stays PID 1's
	// until the start step's undo closes it.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, _, _, _, err := conn.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return
		}
		var msg launcherMessage
		if err := json.Unmarshal(buf[:n], &msg); err != nil {
			log.WithError(err).Warn("a garbled message from PID 1")
			continue
		}
		if msg.Proxy != nil {
			l.applyProxy(*msg.Proxy, pid, log)
		}
		if msg.Engine != nil {
			l.calls.answered(msg.Engine.ID, *msg.Engine)
		}
		if msg.IdleStop != nil {
			pause := time.Duration(0)
			if msg.IdlePause != nil {
				pause = *msg.IdlePause
			}
			l.hold.setIdle(*msg.IdleStop, pause)
		}
		if msg.EngineRunning != nil {
			l.hold.engineStateFromPID1(*msg.EngineRunning)
		}
		if msg.Pack != nil {
			go func(req packRequest) { // a pack is copied and hashed: minutes
				l.answerPack(gen, conn, l.usePack(req, gen), req.Live)
			}(*msg.Pack)
		}
	}
}

// applyProxy serves the plan's relays (closing those it no longer has)
// and keeps its variables for new containers and builds.
func (l *launcher) applyProxy(plan proxyPlan, pid int, log logrus.FieldLogger) {
	r := &l.relays
	r.mu.Lock()
	defer r.mu.Unlock()
	r.env = plan.Env
	if r.serving == nil {
		r.serving = map[relay]*transport.Forwarder{}
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
func (l *launcher) proxyEnv() map[string]string {
	l.relays.mu.Lock()
	defer l.relays.mu.Unlock()
	return l.relays.env
}

// closeRelays closes every relay and waits for them.
func (l *launcher) closeRelays() {
	r := &l.relays
	r.mu.Lock()
	for k, f := range r.serving {
		f.Listener.Close()
		delete(r.serving, k)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

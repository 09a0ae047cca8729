package pid1

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/wire"
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

// planProxy makes the plan for p, where inner is the namespace's end of
// the link and subnet the link's. NO_PROXY always names what must never
// go through a proxy: the loopback, the link, the two names ddinit
// answers; then the user's.
func planProxy(p *settings.Proxy, inner netip.Addr, subnet netip.Prefix) (wire.ProxyPlan, error) {
	var plan wire.ProxyPlan
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
			return wire.ProxyPlan{}, err
		}
		if isLoopback(u.Hostname()) {
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
			}
			r := wire.Relay{Listen: netip.AddrPortFrom(inner, mustPort(port)).String(), Dial: net.JoinHostPort(u.Hostname(), port)}
			if i := slices.IndexFunc(plan.Relays, func(o wire.Relay) bool { return o.Listen == r.Listen }); i >= 0 && plan.Relays[i] != r {
				return wire.ProxyPlan{}, fmt.Errorf("two proxies on the distro's loopback on port %s (%s, %s): the namespace reaches one per port", port, plan.Relays[i].Dial, r.Dial)
			} else if i < 0 {
				plan.Relays = append(plan.Relays, r)
			}
			u.Host = r.Listen
		}
		plan.Env[name] = u.String()
	}
	noProxy := []string{"localhost", "127.0.0.0/8", "::1", subnet.Masked().String(), network.HostName, network.GatewayName}
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
func envList(p wire.ProxyPlan) []string {
	var out []string
	for name, v := range p.Env {
		out = append(out, name+"="+v)
	}
	slices.Sort(out)
	return out
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
	in.dockerdEnv = envList(plan)
	in.mu.Unlock()
	if !in.tell(wire.Message{Kind: wire.Proxy, Proxy: &plan}) {
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
	// What the file holds now: read once (it is the pack's at the first
	// call, the boot's, where the read took ~6 ms of 200 KB here).
	var cur []byte
	if !read {
		b, err := regularfile.Read(caBundle, maxCABundleBytes)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("the version pack's CA bundle: %w", err)
		}
		pack, cur = b, b
		in.mu.Lock()
		in.packBundle, in.packBundleRead = b, true
		in.mu.Unlock()
	} else if b, err := regularfile.Read(caBundle, maxCABundleBytes); err == nil {
		cur = b
	}
	want := slices.Clip(pack)
	for _, c := range cas {
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(want, '\n')
		}
		want = append(want, strings.TrimSpace(c)+"\n"...)
	}
	if cur != nil && string(cur) == string(want) {
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

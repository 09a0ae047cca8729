package network

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
)

// DefaultSubnet is a /30 in the shared address space (RFC 6598): not in
// docker's default pools (172.17-31/16, 192.168/16) nor in WSL's NAT
// range (172.16/12), and unlikely on a corporate LAN.
// Names containers resolve to the Windows host and to the distro's end
// of the link, which ddinit answers itself (its DNS forwarder, and
// /etc/hosts for containers that do not ask it).
const (
	HostName    = "host.docker.internal"
	GatewayName = "gateway.docker.internal"
)

const DefaultSubnet = "100.64.249.0/30"

// DefaultSubnet6 is the link's IPv6 prefix when the distro has IPv6: a
// unique local /64 (RFC 4193) named after the IPv4 one, so it meets no
// global route and none of docker's or WSL's defaults.
const DefaultSubnet6 = "fd64:100:249::/64"

// Names of the two ends.
const (
	HostLink  = "ddinit0"
	innerTemp = "ddinit0-peer"
	InnerLink = "eth0"
	ruleTag   = "ddinit"
)

// Config says how to wire the namespaces.
type Config struct {
	Subnet string // a /30 (or larger): .1 is the distro's side, .2 ours
	// Subnet6 is the IPv6 prefix (::1 the distro's side, ::2 ours), wired
	// only when the distro's namespace has IPv6; "" leaves IPv6 out.
	Subnet6 string
	// Tools makes the iptables tools' commands, run in the distro's
	// network namespace. ddinit run uses the version pack's, chrooted into
	// PID 1's root: the bootstrap distro has no iptables of its own, and
	// this is the very tool (nft backend) dockerd uses inside.
	Tools Tools
	Log   logrus.FieldLogger
}

// Link is a wired namespace; Close undoes it.
type Link struct {
	cfg        Config
	HostAddr   netip.Prefix
	InnerAddr  netip.Prefix
	rules      [][]string
	oldForward string

	// HostAddr6 and InnerAddr6 are valid when IPv6 is wired; IPv6Off
	// says why it is not.
	HostAddr6  netip.Prefix
	InnerAddr6 netip.Prefix
	IPv6Off    string
	rules6     [][]string
	pid        int
	// oldSysctls are the IPv6 settings changed in the distro, restored in
	// reverse order.
	oldSysctls []sysctlValue
}

type sysctlValue struct{ path, value string }

// Addrs6 returns the distro's (::1) and the namespace's (::2) addresses
// for an IPv6 prefix.
func Addrs6(subnet string) (host, inner netip.Prefix, err error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 126 {
		return host, inner, fmt.Errorf("subnet6 %q: want an IPv6 prefix of /126 or larger", subnet)
	}
	h := p.Masked().Addr().Next()
	return netip.PrefixFrom(h, p.Bits()), netip.PrefixFrom(h.Next(), p.Bits()), nil
}

// Addrs returns the distro's and the namespace's addresses for a subnet.
func Addrs(subnet string) (host, inner netip.Prefix, err error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return host, inner, fmt.Errorf("subnet %q: want an IPv4 prefix of /30 or larger", subnet)
	}
	base := p.Masked().Addr()
	h := base.Next()
	return netip.PrefixFrom(h, p.Bits()), netip.PrefixFrom(h.Next(), p.Bits()), nil
}

// Wire connects the network namespace of pid to this one.
func Wire(pid int, cfg Config) (*Link, error) {
	host, inner, err := Addrs(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	l := &Link{cfg: cfg, HostAddr: host, InnerAddr: inner}
	fail := func(err error) (*Link, error) {
		l.Close()
		return nil, err
	}
	// A crash can leave our end behind: it is ours to replace.
	if old, err := netlink.LinkByName(HostLink); err == nil {
		netlink.LinkDel(old)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: HostLink}, PeerName: innerTemp}
	if err := netlink.LinkAdd(veth); err != nil {
		return fail(fmt.Errorf("create veth %s: %w", HostLink, err))
	}
	peer, err := netlink.LinkByName(innerTemp)
	if err != nil {
		return fail(fmt.Errorf("veth peer: %w", err))
	}
	if err := netlink.LinkSetNsPid(peer, pid); err != nil {
		return fail(fmt.Errorf("move %s into PID 1's namespace: %w", innerTemp, err))
	}
	hostLink, err := netlink.LinkByName(HostLink)
	if err != nil {
		return fail(err)
	}
	if err := netlink.AddrAdd(hostLink, &netlink.Addr{IPNet: ipnet(host)}); err != nil {
		return fail(fmt.Errorf("address %s on %s: %w", host, HostLink, err))
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		return fail(fmt.Errorf("%s up: %w", HostLink, err))
	}
	if err := configureInner(pid, inner, host.Addr()); err != nil {
		return fail(err)
	}
	if err := l.enableNAT(); err != nil {
		return fail(err)
	}
	fields := logrus.Fields{"distro": host.String(), "namespace": inner.String()}
	// IPv6 is a bonus: without it the namespace still works over IPv4, so
	// a failure here is a warning that names the cause, not a failed boot.
	switch reason := distroIPv6(); {
	case cfg.Subnet6 == "":
		l.IPv6Off = "not configured (subnet6 is empty)"
	case reason != "":
		l.IPv6Off = reason
	default:
		if err := l.wireIPv6(pid, hostLink); err != nil {
			l.unwireIPv6()
			l.IPv6Off = err.Error()
			cfg.Log.WithError(err).Warn("IPv6 left out of the namespace; IPv4 works")
		}
	}
	if l.IPv6Off == "" {
		fields["distro6"], fields["namespace6"] = l.HostAddr6.String(), l.InnerAddr6.String()
	} else {
		fields["ipv6"] = "off: " + l.IPv6Off
	}
	cfg.Log.WithFields(fields).Info("network wired")
	return l, nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// configureInner names, addresses and raises our end inside PID 1's
// namespace and routes everything through the distro.
func configureInner(pid int, addr netip.Prefix, gw netip.Addr) error {
	return withInner(pid, innerTemp, func(h *netlink.Handle, link netlink.Link) error {
		return configureInnerLink(h, link, addr, gw)
	})
}

func configureInnerLink(h *netlink.Handle, link netlink.Link, addr netip.Prefix, gw netip.Addr) error {
	if err := h.LinkSetName(link, InnerLink); err != nil {
		return fmt.Errorf("rename to %s: %w", InnerLink, err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipnet(addr)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, InnerLink, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return err
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		h.LinkSetUp(lo)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

const forwardSysctl = "/proc/sys/net/ipv4/ip_forward"

// enableNAT lets the namespace's traffic out: forwarding on, masquerade
// of our subnet, and forwarding accepted even under a DROP policy.
func (l *Link) enableNAT() error {
	old, err := os.ReadFile(forwardSysctl)
	if err != nil {
		return fmt.Errorf("read %s: %w", forwardSysctl, err)
	}
	if strings.TrimSpace(string(old)) != "1" {
		if err := os.WriteFile(forwardSysctl, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable IPv4 forwarding: %w", err)
		}
		l.oldForward = strings.TrimSpace(string(old))
	}
	// Set before the insert: a part of them may be in even if it fails,
	// and Close removes what is there.
	l.rules = natRules(l.HostAddr.Masked().String())
	if err := insertRules("iptables", l.cfg.Tools, l.log(), l.rules); err != nil {
		return fmt.Errorf("NAT for %s: %w", l.HostAddr.Masked(), err)
	}
	return nil
}

// log is the configured logger, or one that discards.
func (l *Link) log() logrus.FieldLogger {
	if l.cfg.Log != nil {
		return l.cfg.Log
	}
	return discardLog
}

var discardLog = func() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}()

// Close removes the rules, restores forwarding and deletes the veth (the
// namespace's end goes with it, or with the namespace).
func (l *Link) Close() error {
	errs := []error{l.unwireIPv6(), deleteRules("iptables", l.cfg.Tools, l.log(), l.rules)}
	l.rules = nil
	if l.oldForward != "" {
		if err := os.WriteFile(forwardSysctl, []byte(l.oldForward), 0o644); err != nil {
			errs = append(errs, err)
		}
		l.oldForward = ""
	}
	if link, err := netlink.LinkByName(HostLink); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", HostLink, err))
		}
	}
	return errors.Join(errs...)
}

// State is a namespace's view of its end of the link, for /status.
type State struct {
	Link      string   `json:"link"`
	Addresses []string `json:"addresses"`          // with prefix length; link-local ones left out
	Gateways  []string `json:"gateways,omitempty"` // of the default routes
	Error     string   `json:"error,omitempty"`
}

// Describe reads the calling thread's namespace's end of the link.
func Describe() State {
	st := State{Link: InnerLink}
	link, err := netlink.LinkByName(InnerLink)
	if err != nil {
		st.Error = fmt.Sprintf("no %s: the namespace has no link to the distro (see ddinit's log)", InnerLink)
		return st
	}
	addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL)
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		st.Addresses = append(st.Addresses, a.IPNet.String())
	}
	routes, _ := netlink.RouteList(link, netlink.FAMILY_ALL)
	for _, r := range routes {
		if r.Gw != nil && (r.Dst == nil || r.Dst.IP.IsUnspecified()) {
			st.Gateways = append(st.Gateways, r.Gw.String())
		}
	}
	return st
}

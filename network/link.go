package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// DefaultSubnet is a /30 in the shared address space (RFC 6598): not in
// docker's default pools (172.17-31/16, 192.168/16) nor in WSL's NAT
// range (172.16/12), and unlikely on a corporate LAN.
const DefaultSubnet = "100.64.249.0/30"

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
	// Iptables makes an iptables command that runs in the distro's network
	// namespace. ddinit run uses the version pack's, chrooted into PID 1's
	// root: the bootstrap distro has no iptables of its own, and this is
	// the very tool (nft backend) dockerd uses inside.
	Iptables func(args ...string) *exec.Cmd
	Log      logrus.FieldLogger
}

// Link is a wired namespace; Close undoes it.
type Link struct {
	cfg        Config
	HostAddr   netip.Prefix
	InnerAddr  netip.Prefix
	rules      [][]string
	oldForward string
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
	cfg.Log.WithFields(logrus.Fields{"distro": host.String(), "namespace": inner.String()}).Info("network wired")
	return l, nil
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// configureInner names, addresses and raises our end inside PID 1's
// namespace and routes everything through the distro.
func configureInner(pid int, addr netip.Prefix, gw netip.Addr) error {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("PID 1's network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in PID 1's namespace: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(innerTemp)
	if err != nil {
		return err
	}
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
	subnet := l.HostAddr.Masked().String()
	comment := []string{"-m", "comment", "--comment", ruleTag}
	rules := [][]string{
		append([]string{"-t", "nat", "POSTROUTING", "-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"}, comment...),
		append([]string{"-t", "filter", "FORWARD", "-i", HostLink, "-j", "ACCEPT"}, comment...),
		append([]string{"-t", "filter", "FORWARD", "-o", HostLink, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}, comment...),
	}
	for _, r := range rules {
		// A crashed ddinit run may have left the same rule: remove copies.
		for i := 0; i < 16 && l.iptables(append([]string{"-w", r[0], r[1], "-D", r[2]}, r[3:]...)...) == nil; i++ {
		}
		// Insert: ahead of a DROP another tool may have put first.
		args := append([]string{"-w", r[0], r[1], "-I", r[2]}, r[3:]...)
		if err := l.iptables(args...); err != nil {
			return fmt.Errorf("NAT for %s: %w", subnet, err)
		}
		l.rules = append(l.rules, r)
	}
	return nil
}

func (l *Link) iptables(args ...string) error {
	if l.cfg.Iptables == nil {
		return errors.New("no iptables to run")
	}
	out, err := l.cfg.Iptables(args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Close removes the rules, restores forwarding and deletes the veth (the
// namespace's end goes with it, or with the namespace).
func (l *Link) Close() error {
	var errs []error
	for i := len(l.rules) - 1; i >= 0; i-- {
		r := l.rules[i]
		if err := l.iptables(append([]string{"-w", r[0], r[1], "-D", r[2]}, r[3:]...)...); err != nil {
			errs = append(errs, err)
		}
	}
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

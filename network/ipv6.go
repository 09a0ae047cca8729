package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	ipv6Conf    = "/proc/sys/net/ipv6/conf"
	ipv6Forward = ipv6Conf + "/all/forwarding"
)

// distroIPv6 says why the distro's namespace has no IPv6, or "" when it
// has it.
func distroIPv6() string {
	b, err := os.ReadFile(ipv6Conf + "/all/disable_ipv6")
	if err != nil {
		return "the kernel has no IPv6"
	}
	if strings.TrimSpace(string(b)) != "0" {
		return "IPv6 is disabled in the distro (net.ipv6.conf.all.disable_ipv6)"
	}
	return ""
}

// wireIPv6 gives the link an IPv6 prefix: forwarding and NAT66 in the
// distro first (nothing in the namespace points at a half-built path),
// then the addresses and the namespace's default route. Masquerading, not
// prefix delegation: the distro rarely owns a prefix it could route to us,
// and WSL's own NAT network has none.
func (l *Link) wireIPv6(pid int, hostLink netlink.Link) error {
	host, inner, err := Addrs6(l.cfg.Subnet6)
	if err != nil {
		return err
	}
	if err := l.enableForwarding6(); err != nil {
		return err
	}
	subnet := host.Masked().String()
	// Set before the insert, as for IPv4: unwireIPv6 removes what is in.
	l.rules6 = natRules(subnet)
	if err := insertRules("ip6tables", l.cfg.Tools, l.log(), l.rules6); err != nil {
		return fmt.Errorf("NAT66 for %s: %w", subnet, err)
	}
	// Our end of a fresh veth takes the default setting, which may have
	// IPv6 off even where all/ has it on.
	os.WriteFile(filepath.Join(ipv6Conf, HostLink, "disable_ipv6"), []byte("0"), 0o644)
	// No duplicate address detection: the link has two ends, both ours,
	// and DAD would hold the addresses back for a second or more.
	if err := netlink.AddrAdd(hostLink, &netlink.Addr{IPNet: ipnet(host), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("address %s on %s: %w", host, HostLink, err)
	}
	l.HostAddr6 = host
	if err := configureInner6(pid, inner, host.Addr()); err != nil {
		return err
	}
	l.InnerAddr6 = inner
	l.pid = pid
	return nil
}

// configureInner6 addresses our end inside PID 1's namespace and routes
// IPv6 through the distro.
func configureInner6(pid int, addr netip.Prefix, gw netip.Addr) error {
	return withInner(pid, InnerLink, func(h *netlink.Handle, link netlink.Link) error {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipnet(addr), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("address %s on %s: %w", addr, InnerLink, err)
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		if err := h.RouteAdd(route); err != nil {
			return fmt.Errorf("IPv6 default route via %s: %w", gw, err)
		}
		return nil
	})
}

// withInner runs fn with a netlink handle in PID 1's namespace and the
// link of that name there (our end of the link).
func withInner(pid int, name string, fn func(*netlink.Handle, netlink.Link) error) error {
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
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s in PID 1's namespace: %w", name, err)
	}
	return fn(h, link)
}

// enableForwarding6 turns IPv6 forwarding on in the distro. Forwarding
// makes an interface with accept_ra=1 ignore router advertisements, so the
// distro would lose the default route its router gives it: those
// interfaces go to accept_ra=2 (accept even when forwarding) first. Every
// value changed, and every interface's own forwarding flag (which the
// all/ switch overwrites), is recorded to be put back.
func (l *Link) enableForwarding6() error {
	old, err := readSysctl(ipv6Forward)
	if err != nil {
		return fmt.Errorf("IPv6 forwarding: %w", err)
	}
	if old == "1" {
		return nil
	}
	ifaces, _ := filepath.Glob(filepath.Join(ipv6Conf, "*"))
	for _, dir := range ifaces {
		name := filepath.Base(dir)
		if name == "all" || name == "lo" || name == HostLink {
			continue
		}
		if v, err := readSysctl(filepath.Join(dir, "forwarding")); err == nil && name != "default" {
			l.oldSysctls = append(l.oldSysctls, sysctlValue{filepath.Join(dir, "forwarding"), v})
		}
		ra := filepath.Join(dir, "accept_ra")
		if v, err := readSysctl(ra); err == nil && v == "1" {
			if err := os.WriteFile(ra, []byte("2"), 0o644); err != nil {
				return fmt.Errorf("keep router advertisements on %s: %w", name, err)
			}
			l.oldSysctls = append(l.oldSysctls, sysctlValue{ra, v})
		}
	}
	if err := os.WriteFile(ipv6Forward, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv6 forwarding: %w", err)
	}
	l.oldSysctls = append(l.oldSysctls, sysctlValue{ipv6Forward, old})
	return nil
}

// unwireIPv6 undoes wireIPv6, whatever part of it was done.
func (l *Link) unwireIPv6() error {
	var errs []error
	if l.InnerAddr6.IsValid() {
		// The namespace may outlive the link by a moment: its IPv6 route
		// must not point at a path without NAT.
		withInner(l.pid, InnerLink, func(h *netlink.Handle, link netlink.Link) error {
			return h.AddrDel(link, &netlink.Addr{IPNet: ipnet(l.InnerAddr6)})
		})
		l.InnerAddr6 = netip.Prefix{}
	}
	if l.HostAddr6.IsValid() {
		if link, err := netlink.LinkByName(HostLink); err == nil {
			netlink.AddrDel(link, &netlink.Addr{IPNet: ipnet(l.HostAddr6)})
		}
		l.HostAddr6 = netip.Prefix{}
	}
	errs = append(errs, deleteRules("ip6tables", l.cfg.Tools, l.log(), l.rules6))
	l.rules6 = nil
	for i := len(l.oldSysctls) - 1; i >= 0; i-- {
		s := l.oldSysctls[i]
		err := os.WriteFile(s.path, []byte(s.value), 0o644)
		// An interface that went away while we ran has nothing to restore.
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("restore %s: %w", s.path, err))
		}
	}
	l.oldSysctls = nil
	return errors.Join(errs...)
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

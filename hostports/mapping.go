package hostports

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/engineclient"
)

// listener is a socket a host-network container listens on.
type listener struct {
	Container, Name string // full id, name
	Proto           string
	Addr            netip.AddrPort // as the kernel says (v4-mapped kept)
	V6Only          bool
}

// route is where a listener is served in the distro, and what a
// connection there dials in the engine's namespace; or, Distro empty, why
// it is not.
type route struct {
	Distro, Dial string
	Reason       string
}

var (
	loopback4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	loopback6 = netip.IPv6Loopback()
)

// routesOf maps a listener to the distro's loopback: the address a client
// in the distro would use for it were it listening in the distro. noIPv6,
// when not empty, says why the distro has no [::1].
func routesOf(l listener, noIPv6 string) []route {
	a, port := l.Addr.Addr().Unmap(), l.Addr.Port() // a v4-mapped address listens on IPv4
	at := func(a netip.Addr) string { return netip.AddrPortFrom(a, port).String() }
	v6 := func(dial netip.Addr) route {
		if noIPv6 != "" {
			return route{Reason: noIPv6}
		}
		return route{Distro: at(loopback6), Dial: at(dial)}
	}
	switch {
	case a.Is6() && (a.IsLinkLocalUnicast() || a.Zone() != ""):
		// A link-local address serves the neighbours on its one link (the
		// distro is one on the link to the engine, and reaches it there),
		// and is dialled only with that link as its scope: nothing a
		// client of the distro's loopback means.
		return []route{{Reason: "a link-local address serves its own link: not forwarded"}}
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		// A socket bound to a group receives what is sent to the group;
		// nothing connects to it.
		return []route{{Reason: "a multicast or broadcast address is not reached through a loopback: not forwarded"}}
	case a.Is4() && a.IsLoopback():
		return []route{{Distro: at(a), Dial: at(a)}}
	case a.Is4() && a.IsUnspecified():
		return []route{{Distro: at(loopback4), Dial: at(loopback4)}}
	case a.Is4():
		return []route{{Distro: at(loopback4), Dial: at(a)}}
	case a.IsLoopback():
		return []route{v6(loopback6)}
	case a.IsUnspecified():
		if l.V6Only {
			return []route{v6(loopback6)}
		}
		return []route{v6(loopback6), {Distro: at(loopback4), Dial: at(loopback4)}}
	}
	return []route{v6(a)}
}

// fwdKey is a forward: a protocol and an address in the distro.
type fwdKey struct{ Proto, Distro string }

// entry is one line of State: a listener and one of its routes.
type entry struct {
	l listener
	route
	rank int
}

// rank orders the listeners that want one distro address: first one on
// that very address, then its family's wildcard, then the other family's
// (a dual-stack [::]), then one on another address.
func rank(l listener, r route) int {
	a := l.Addr.Addr().Unmap()
	d, _ := netip.ParseAddrPort(r.Distro)
	switch {
	case a.IsLoopback():
		return 0
	case a.IsUnspecified() && a.Is4() == d.Addr().Is4():
		return 1
	case a.IsUnspecified():
		return 2
	}
	return 3
}

// plan maps the listeners (routesOf) and says which forwards are wanted:
// distro address -> dial target. Where two listeners want one address,
// the first by rank, then by address and container, is served; another
// that dials the same target is served by it too (SO_REUSEPORT
// siblings); any other is reported, not forwarded.
func plan(ls []listener, noIPv6 string) ([]entry, map[fwdKey]string) {
	var entries []entry
	for _, l := range ls {
		for _, r := range routesOf(l, noIPv6) {
			entries = append(entries, entry{l, r, rank(l, r)})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.l.Proto, b.l.Proto), cmp.Compare(a.Distro, b.Distro),
			cmp.Compare(a.rank, b.rank), a.l.Addr.Compare(b.l.Addr), cmp.Compare(a.l.Container, b.l.Container))
	})
	want := map[fwdKey]string{}
	served := map[fwdKey]entry{}
	for i, e := range entries {
		if e.Distro == "" {
			continue
		}
		k := fwdKey{e.l.Proto, e.Distro}
		first, taken := served[k]
		switch {
		case !taken:
			served[k] = e
			want[k] = e.Dial
		case first.Dial != e.Dial:
			entries[i].route = route{Reason: fmt.Sprintf("%s is served for %s's listener on %s: not forwarded",
				e.Distro, containerName(first.l), first.l.Addr)}
		}
	}
	return entries, want
}

func containerName(l listener) string {
	if l.Name != "" {
		return l.Name
	}
	return engineclient.ShortID(l.Container)
}

// diff says what to close and what to open to go from the open forwards
// to the wanted ones (each: distro address -> dial target): a forward
// whose target changed is closed and opened again. Both come sorted.
func diff(open, want map[fwdKey]string) (closing, opening []fwdKey) {
	for k, dial := range open {
		if w, ok := want[k]; !ok || w != dial {
			closing = append(closing, k)
		}
	}
	for k, dial := range want {
		if o, ok := open[k]; !ok || o != dial {
			opening = append(opening, k)
		}
	}
	byKey := func(a, b fwdKey) int { return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Distro, b.Distro)) }
	slices.SortFunc(closing, byKey)
	slices.SortFunc(opening, byKey)
	return closing, opening
}

// hostListener is e as /status shows it.
func (e entry) hostListener() control.HostListener {
	return control.HostListener{Container: engineclient.ShortID(e.l.Container), Name: e.l.Name, Proto: e.l.Proto,
		Listen: e.l.Addr.String(), Distro: e.Distro, Reason: e.Reason}
}

package dnsforward

import (
	"bytes"
	"net/netip"
	"strings"
)

// Conf is what a resolver file says: its nameservers, and the lines that
// shape names (search, domain, options), kept as written.
type Conf struct {
	Servers []netip.AddrPort
	// Shaping is the search, domain and options lines, in order.
	Shaping []string
}

// maxServers bounds the nameservers used, as glibc reads at most three
// (a hostile file names thousands).
const maxServers = 8

// ParseConf reads a resolver file. Lines it does not know, and nameserver
// lines that name no address, are ignored, as the C libraries ignore them.
func ParseConf(b []byte) Conf {
	var c Conf
	// Lines of any length (a scanner would stop at an overlong one and
	// lose the servers after it).
	for line := range strings.SplitSeq(string(b), "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 || len(c.Servers) >= maxServers {
				continue
			}
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				continue
			}
			c.Servers = append(c.Servers, netip.AddrPortFrom(a.Unmap(), 53))
		case "search", "domain", "options":
			if len(f) > 1 {
				c.Shaping = append(c.Shaping, strings.Join(f, " "))
			}
		}
	}
	return c
}

// NamespaceFile is the resolver file for the namespace: only server, with
// the distro's search, domain and options lines.
func NamespaceFile(server netip.Addr, distro Conf) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by ddinit: containers ask ddinit's DNS forwarder, which asks\n# the distro's nameservers as they are now.\n")
	b.WriteString("nameserver " + server.String() + "\n")
	for _, l := range distro.Shaping {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

// Package dnsforward is the DNS server containers ask: it answers the
// names ddinit gives meaning to (host.docker.internal,
// gateway.docker.internal) itself and forwards every other query to the
// nameservers of the distro's resolver file as that file is now, so the
// resolver the user's own tools use (a VPN's, systemd-resolved on the
// distro's loopback, a dnsmasq) is the one containers use.
//
// It owns: reading a resolver file (resolv.conf) and following it as it is
// replaced, forwarding with failover between its servers, a TCP retry for
// truncated answers, a cap on queries in flight, SERVFAIL when no server
// answers, and counts of what it did. Wire parsing is the miekg/dns
// library's.
//
// It must not open sockets in another network namespace, touch routes or
// files other than the resolver file it reads: where it listens and what
// the two names mean are given to it (by `ddinit run`).
package dnsforward

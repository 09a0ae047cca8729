// Package dnsforward is the DNS server containers ask: it answers the
// names ddinit gives meaning to (host.docker.internal,
// gateway.docker.internal) itself and forwards every other query to the
// nameservers of the distro's resolver file as that file is now, so the
// resolver the user's own tools use (a VPN's, systemd-resolved on the
// distro's loopback, a dnsmasq) is the one containers use.
//
// It owns: reading a resolver file (resolv.conf) and following it as it is
// replaced, forwarding with failover between its servers, a TCP retry for
// truncated answers, SERVFAIL when no server answers, and counts of what
// it did. Wire parsing is the miekg/dns library's.
//
// It owns fairness between its clients, a client being a source address
// (a container, or dockerd's embedded DNS asking for one): the queries in
// flight and the TCP connections are capped, and one client holds at
// most its share of each (package fairshare), so a container flooding
// queries to a nameserver that drops them cannot take the others' DNS.
//
// It owns looking at the resolver file without ever making a query wait
// on it: the file may be a FIFO, a socket, a directory, a symlink loop or
// on a file system that hangs (package regularfile reads it). One look at
// a time runs in its own goroutine; queries wait for it briefly, not at
// all while one is stuck, and use the last reading meanwhile; Stats says
// why the file cannot be used; Server.Close does not wait for a look.
//
// It must not open sockets in another network namespace, touch routes or
// files other than the resolver file it reads: where it listens and what
// the two names mean are given to it (by `ddinit run`).
package dnsforward

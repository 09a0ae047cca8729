// Package network wires ddinit's private network namespace to the distro's:
// a veth pair with addresses from a small subnet that avoids docker's and
// WSL's defaults, a default route out, NAT for outbound traffic in the
// distro's namespace, and published container ports forwarded back, so
// Windows reaches them as localhost:PORT.
//
// After an idle stop it also clears, from PID 1 in its own namespace, what
// dockerd left there (ClearEngine): its bridges, chains and rules, and
// nothing else (DOCKER-USER, Docker's chain for its users, stays).
//
// It runs in `ddinit run` (the distro's namespace) and configures PID 1's
// namespace from there through netlink, and opens sockets in PID 1's
// namespace for ddinit run to serve there (ListenIn, ListenTCPIn). It must
// undo everything it does: the veth, the NAT rules (each family's put in
// and taken out with one iptables-restore, a transaction per table), the
// forwarding sysctl, the listeners.
package network

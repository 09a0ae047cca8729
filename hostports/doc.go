// Package hostports makes the ports that host-network containers
// (`docker run --network host`) listen on reachable from the distro, at
// the same port on its loopback, as Docker Desktop does on Windows. Those
// containers share the engine's network namespace (PID 1's), which
// nothing else forwards: the -p publisher (package network) serves only
// the ports docker publishes.
//
// A Watcher, which the launcher runs while PID 1 does, owns:
//
//   - the list of running host-network containers (HostConfig.NetworkMode
//     "host"), from docker's API: listed each time its events open, then
//     kept by the start and die events;
//   - while the setting is on and one of them runs, a look at the
//     namespace's listening sockets every Interval (100 ms): TCP in LISTEN
//     and bound, unconnected UDP, IPv4 and IPv6, from sock_diag dumps made
//     by a netlink socket created in the namespace; a dump only when the
//     namespace's in-use socket counts (its sockstat files, opened there)
//     moved since the last one, or a second has passed (a close and an
//     open between two polls leave the counts as they were);
//   - whose each socket is: by its inode, among the sockets the
//     containers' own processes hold (their cgroup's cgroup.procs, then
//     /proc/PID/fd), read only when an inode not seen before appears; the
//     verdict is kept while the inode lives (a "no one's" only until the
//     containers change);
//   - a forward on the distro's loopback for each such listener
//     (transport.ForwardPort, the -p publisher's forwarder), each
//     connection dialled from a socket made in the namespace
//     (network.DialIn): 127.x.y.z and [::1] on the same address; 0.0.0.0
//     on 127.0.0.1; [::] on [::1], and on 127.0.0.1 too unless v6only;
//     any other address on the loopback of its family, dialled where it
//     listens (a v4-mapped address is IPv4; a link-local one is not
//     forwarded, nor is IPv6 where the distro cannot bind [::1]). Of two
//     listeners wanting one address the one on that very address wins,
//     then a wildcard; the other is reported;
//   - State: every listener, where it is served or why not (for /status).
//
// It must not forward a socket it has not found held by a running
// host-network container's processes: an allow-list, never a deny-list,
// so that dockerd's, containerd's, ddinit's own (its DNS forwarder),
// Kubernetes' (etcd, the kubelet, the CRI) and those of a process `ddinit
// enter` started in the namespace stay where they are. It must not look
// through every process of the machine (only the containers' cgroups),
// nor poll while no host-network container runs or the setting is off,
// nor serve a port another program holds in the distro (reported in
// State, logged once, tried again every couple of seconds, never taken
// over), nor close a forward on a dump that failed (its connections would
// go with it). It changes nothing in the engine's namespace.
package hostports

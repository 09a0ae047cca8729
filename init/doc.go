// Package initd (directory init/) holds ddinit's PID-1 duties. The outer
// half (Outer) runs in the distro as `ddinit run`: it re-executes ddinit
// into new mount, pid, net, ipc and uts namespaces, relays signals, exposes
// the services' sockets and exits with the inner status. The inner half
// (Inner) is PID 1 there: it reaps every orphan, assembles the root
// filesystem, mounts proc, sys, dev, run, tmp and the cgroup hierarchy,
// binds in the data store, pivots, and hands over to the supervisor; on
// SIGTERM it stops everything, syncs and unmounts.
//
// It must not hold service logic (package services) or parse images
// (package rootfs); it wires them together.
package initd

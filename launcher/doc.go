// Package launcher is `ddinit run`'s life in the distro. It starts PID 1
// of new mount, pid, net, ipc and uts namespaces (package pid1, reached
// only through package wire: the handoff and the one socket between
// them), relays signals to it, and, once PID 1 reports its services'
// sockets, wires the namespace's network and serves its DNS forwarder,
// keeps its drives and devices following the distro's, exposes its
// sockets through the holder (the engine on demand: the mirror of PID 1's
// engine state machine, and the idle stop), relays a proxy on the
// distro's loopback, verifies and records the version pack chosen for the
// next boot (and boots the previous one again when it fails its trial),
// replaces PID 1 for a live switch while holding every client and
// answering the control sockets itself in between, and exits with the
// last PID 1's status. Its life is three tables of steps, each with its
// undo (steps.go; package steps runs them).
//
// Each file owns one part: launcher.go (the life, PID 1's process and its
// messages), steps.go (the tables), expose.go (the exposed sockets),
// holder.go (the engine on demand), packs.go and switch.go (version
// packs, the live switch, the stand-in), network.go, dns.go, relays.go,
// follow.go (drives and devices), clitools.go, kube.go (PID 1's reports
// of the Kubernetes cluster passed to package kubeports, which publishes
// it in the distro), reach.go (host-network containers' listeners and
// container networks made reachable from the distro: packages hostports
// and bridgeroutes, started with the link).
//
// It must not hold service logic (package services), mount plans
// (package mounts), parse images (packages iso9660, rootfs) or import
// package pid1: what crosses between the two processes is package
// wire's.
package launcher

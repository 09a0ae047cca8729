// Package initd (directory init/) holds the life of ddinit's two
// processes. `ddinit run` (Run, the launcher) lives in the distro: it
// re-executes ddinit as PID 1 of new mount, pid, net, ipc and uts
// namespaces, relays signals, exposes the services' sockets through the
// holder (the engine on demand), wires the namespace's network, serves its
// DNS forwarder and the relay to a proxy on the distro's loopback, keeps
// its drives and devices following the distro's, verifies and records the
// version pack chosen for the next boot (and boots the previous one again
// when it fails its trial), replaces PID 1 for a live switch while holding
// every client and answering the control sockets itself in between, and
// exits with the last PID 1's status. It does all
// this as tables of named steps, each with its undo (steps.go). PID 1
// (PID1) reaps every orphan and runs the boot as a table of phases
// (boot.go): data store, images, mounts (the plan of package mounts),
// pivot_root, services; it stops, pauses and wakes the engine when ddinit
// run asks, puts the settings' proxy and CAs in place for dockerd, and on
// SIGTERM or POST /shutdown it runs the shutdown phases. The two talk over
// the events pipe (PID 1 to ddinit run) and a socket pair (both ways).
//
// It must not hold service logic (package services), mount plans
// (package mounts) or parse images (package rootfs); it wires them
// together and answers the control API from what they report.
package initd

// Package initd (directory init/) holds the life of ddinit's two
// processes. `ddinit run` (Run, the launcher) lives in the distro: it
// re-executes ddinit as PID 1 of new mount, pid, net, ipc and uts
// namespaces, relays signals, exposes the services' sockets, wires the
// namespace's network, keeps its drives and devices following the
// distro's, and exits with PID 1's status. PID 1 (PID1) reaps every
// orphan and runs the boot as a table of phases (boot.go): data store,
// images, mounts (the plan of package mounts), pivot_root, services; on
// SIGTERM or POST /shutdown it runs the shutdown phases.
//
// It must not hold service logic (package services), mount plans
// (package mounts) or parse images (package rootfs); it wires them
// together and answers the control API from what they report.
package initd

// Package cgroup owns the engine's cgroup parent: the one cgroup that holds
// containerd (and the shims it starts) and every service's cgroup, and
// nothing else — not `ddinit run`, not PID 1, not the distro's processes.
// It places a process there, freezes and thaws the whole parent (cgroup
// v2 cgroup.freeze, v1 freezer), and asks the kernel to reclaim what the
// engine's cgroups hold (v2 memory.reclaim; v1 memory.force_empty on those
// left empty), on either version of the hierarchy.
//
// It also lists, reading only, the processes of a cgroup a process is in
// (Procs: a host-network container's, for package hostports).
//
// It must not write to a cgroup outside the parent it is given, and must not
// drop caches machine-wide: other distros share the kernel.
package cgroup

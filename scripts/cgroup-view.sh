#!/usr/bin/env bash
# cgroup-view.sh LAYOUT COMMAND...: runs COMMAND where /sys/fs/cgroup is
# laid out as LAYOUT says.
#   machine  the machine's own layout, as is.
#   v2       the cgroup v2 hierarchy alone at /sys/fs/cgroup, as WSL 2
#            mounts it. On a hybrid machine (v1 controllers, cgroup2 at
#            /sys/fs/cgroup/unified) the command runs in a mount namespace
#            of its own, made private first, where cgroup2 is mounted over
#            /sys/fs/cgroup: nothing any other process sees changes. The
#            controllers stay where the machine put them (those bound to a
#            v1 hierarchy are not in the v2 one).
# make bench uses v2 by default: ddinit picks its services' runtime by
# the layout (crun where v2 is alone), and its figures should be WSL's.
set -euo pipefail
layout=$1
shift
fstype() { stat -fc %T "$1" 2>/dev/null || true; }
case "$layout" in
machine) exec "$@" ;;
v2)
	if [ "$(fstype /sys/fs/cgroup)" = cgroup2fs ]; then
		exec "$@"
	fi
	if [ "$(fstype /sys/fs/cgroup/unified)" != cgroup2fs ]; then
		echo "cgroup-view: this machine has no cgroup v2 hierarchy to show alone; running on its own layout" >&2
		exec "$@"
	fi
	exec unshare --mount --propagation private -- sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"' cgroup-view "$@"
	;;
*)
	echo "cgroup-view: layout $layout: want machine or v2" >&2
	exit 2
	;;
esac

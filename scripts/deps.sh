#!/usr/bin/env bash
# Installs what ddinit builds, tests and runs with on a fresh Debian machine:
# the real engine (containerd, runc, dockerd), the ISO tools, and the Go
# modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
	xorriso          # writes the ISO images
	libarchive-tools # bsdtar: the extraction baseline in make bench
	busybox-static   # the base image's userland
	containerd runc crun docker.io iptables # the engine the version pack carries
	e2fsprogs        # mkfs.ext4 for the loop-device test
	socat            # forwarding baseline
	curl             # a real client of the docker API proxy (Expect: 100-continue)
	qemu-system-x86 kmod cpio # make vm-test: the WSL-like guest
	ca-certificates  # the version pack's CA bundle (Go's TLS in dockerd and containerd)
	containernetworking-plugins # CNI's bridge, host-local, portmap, loopback in kubernetes.iso
	docker-registry openssl # a real TLS registry and the certificates the tests make
	docker-compose python3-docker # real clients of the distro proxy
	dnsmasq-base     # the distro's resolvers in the DNS tests (no service: the package without it)
	tinyproxy-bin    # a real HTTP proxy on the distro's loopback (no service: the package without it)
	make
)
if [ "$(id -u)" -eq 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	missing=()
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	# Debian starts the packaged daemons; ddinit runs its own, privately.
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
	fi
else
	echo "deps: not root, assuming ${packages[*]} are installed" >&2
fi
go mod download

#!/usr/bin/env bash
# Builds build/distro.tar: the bootstrap distro's root filesystem, what
#   wsl --import docker-desktop <dir> build/distro.tar
# takes. It holds ddinit, busybox and /etc (wsl.conf starts `ddinit run`).
# The Dockerfile builds the same tree in its final FROM scratch stage.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/build}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
stage=$(mktemp -d "${TMPDIR:-/tmp}/ddinit-distro.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root"/{usr/bin,usr/sbin,etc/ddinit,dev,proc,sys,run,tmp,mnt/host,mnt/wsl,var/lib,var/log,root}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
install -m 0755 "$here/bin/ddinit" "$root/usr/bin/ddinit"
install -m 0755 "$(readlink -f "$(command -v busybox)")" "$root/usr/bin/busybox"
for applet in $(busybox --list); do
	[ "$applet" = busybox ] || [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
done
cp -r "$here/distro/base/etc/." "$root/etc/"
cp -r "$here/distro/wsl/etc/." "$root/etc/"
mkdir -p "$out"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
	-C "$root" -cf "$out/distro.tar.tmp" .
mv "$out/distro.tar.tmp" "$out/distro.tar"
echo "mkdistro: $out/distro.tar $(stat -c %s "$out/distro.tar") bytes"

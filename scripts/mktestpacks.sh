#!/usr/bin/env bash
# Builds the version packs the tests switch to, from build/docker.iso's
# tree, each with its .sha256 sidecar, in $OUT/test-packs/:
#   pack2.iso   the same engine; its dockerd carries --label=pack=2
#               (visible in `docker info`). Only one engine version exists
#               on these machines: a second pack differs by this label.
#   broken.iso  its dockerd prints why it cannot start and exits at once
#   newer.iso   its version-pack.json claims dockerd 99.0.0
#   dies-loading.iso
#               its dockerd is the real one, killed (-9) as soon as its log
#               says it began loading the store's containers: an upgrade
#               that touched the store and died before it was ready
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/iso.sh"
out=${OUT:-$here/build}
src=$out/docker.iso
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
for tool in xorriso python3 sha256sum; do
	command -v "$tool" >/dev/null || { echo "mktestpacks: $tool is missing (make deps installs it)" >&2; exit 1; }
done
[ -f "$src" ] || { echo "mktestpacks: $src is missing (make isos builds it)" >&2; exit 1; }

dest=$out/test-packs
mkdir -p "$dest"
work=$(mktemp -d "$out/.testpacks.XXXXXX")
trap 'rm -rf "$work"' EXIT
xorriso -osirrox on -indev "$src" -extract / "$work/tree" 2>"$work/xorriso.log" || { cat "$work/xorriso.log" >&2; exit 1; }

# pack NAME EDIT: a copy of the tree, EDIT run in it, written as NAME.iso.
pack() {
	local tree=$work/$1
	cp -a "$work/tree" "$tree"
	(cd "$tree" && eval "$2")
	# As mkisos.sh writes docker.iso: the pack differs by its edit only.
	write_iso "$tree" "DDINIT_$1" "$dest/$1.iso" "$work/xorriso.log"
	rm -rf "$tree"
	echo "mktestpacks: $dest/$1.iso"
}
pack pack2 'python3 - <<EOF
import json
p = "containers/services/dockerd/config.json"
spec = json.load(open(p))
spec["process"]["args"].append("--label=pack=2")
json.dump(spec, open(p, "w"), indent=2)
EOF'
pack broken 'rm -f usr/sbin/dockerd && printf "#!/bin/sh\necho \"this pack is broken: dockerd cannot start\" >&2\nexit 1\n" >usr/sbin/dockerd && chmod 0755 usr/sbin/dockerd'
pack dies-loading 'mv usr/sbin/dockerd usr/sbin/dockerd.real && install -m 0755 "$here/scripts/testpacks/dockerd-dies-loading" usr/sbin/dockerd'
pack newer 'python3 - <<EOF
import json
p = "version-pack.json"
m = json.load(open(p))
for c in m["components"]:
    if c["name"] == "dockerd":
        c["version"] = "99.0.0"
json.dump(m, open(p, "w"), indent=2)
EOF'

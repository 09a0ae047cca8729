#!/usr/bin/env bash
# oci-image.sh OUT.tar NAME:TAG SRC:DEST... -- ENTRYPOINT...
#
# Writes OUT.tar, an OCI image layout as a tar (what `ctr images import`
# and containerd's client Import read) holding one image: one gzip layer
# with each SRC at DEST (mode 0755), a config whose Entrypoint is
# ENTRYPOINT, and an index naming it NAME:TAG (io.containerd.image.name;
# org.opencontainers.image.ref.name is the TAG). No builder, no registry:
# how the pause image reaches containerd (mkisos.sh). The same inputs give
# the same bytes: sorted entries, fixed dates and owners, gzip -n.
# Arguments go into the JSON as they are: names without quotes or
# backslashes.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: oci-image.sh OUT.tar NAME:TAG SRC:DEST... -- ENTRYPOINT..." >&2; exit 2; }
out=$1 ref=$2
shift 2
umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$work/oci/blobs/sha256"
chmod 0755 "$work/root" # the image's /
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	install -D -m 0755 "${1%%:*}" "$work/root/${1#*:}"
	shift
done
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "oci-image: no entrypoint" >&2; exit 2; }
entrypoint=$(printf '"%s",' "$@")
entrypoint="[${entrypoint%,}]"

deterministic_tar() { # DIR OUT
	tar -C "$1" --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$2" .
}
# blob FILE MEDIATYPE: moves FILE into the layout's blobs by its digest and
# prints its descriptor.
blob() {
	local digest size
	digest=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$work/oci/blobs/sha256/$digest"
	printf '{"mediaType":"%s","digest":"sha256:%s","size":%d}' "$2" "$digest" "$size"
}

# The layer: its diff ID is the digest of the uncompressed tar.
deterministic_tar "$work/root" "$work/layer.tar"
diffid=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -9 "$work/layer.tar"
layer=$(blob "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)

printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
	"$entrypoint" "$diffid" >"$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
	"$config" "$layer" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)

printf '{"schemaVersion":2,"manifests":[%s]}' \
	"${manifest%\}},\"annotations\":{\"io.containerd.image.name\":\"$ref\",\"org.opencontainers.image.ref.name\":\"${ref##*:}\"}}" >"$work/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
deterministic_tar "$work/oci" "$out"

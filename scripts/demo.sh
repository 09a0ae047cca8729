#!/usr/bin/env bash
# The main job, in one command: verify both images, cache them in a
# throwaway data store and show what the root filesystem will hold.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d /tmp/ddinit-demo.XXXXXX)
for img in build/docker-desktop.iso build/docker.iso; do
	bin/ddinit iso verify "$img"
done
for img in build/docker-desktop.iso build/docker.iso; do
	bin/ddinit iso extract "$img" "$data/$(basename "$img" .iso)"
done
echo
echo "version pack manifest:"
cat "$data/docker/version-pack.json"
echo
echo "service definitions:"
ls "$data/docker/containers/services"
echo
echo "extracted into $data; remove it with: rm -rf $data"

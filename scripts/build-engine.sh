#!/usr/bin/env bash
# Builds the default version pack's engine from pinned module versions
# (packs/versions.env): dockerd and docker-proxy (github.com/docker/docker),
# containerd and its runc v2 shim (github.com/containerd/containerd/v2),
# static (CGO_ENABLED=0), -trimpath, with their real version strings; each
# module's binaries in one go build. The binaries are cached outside the
# checkout, by version and Go version ($DDINIT_CACHE, default
# ~/.cache/ddinit): a second run with nothing changed rebuilds nothing.
# It prints the directory holding the binaries; with --cached it builds
# nothing, and exits 3 when no build is cached.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../packs/versions.env
. "$here/packs/versions.env"
# shellcheck source=modbuild.sh
. "$here/scripts/modbuild.sh"
dest=$cache/engine/docker-$DOCKER_VERSION-containerd-$CONTAINERD_VERSION-$goversion
bins=(dockerd docker-proxy containerd containerd-shim-runc-v2)
if cached "$dest" "${bins[@]}"; then
	echo "$dest"
	exit 0
fi
# --cached: only say where a build already made is (exit 3: none is).
[ "${1:-}" = --cached ] && exit 3
work=$(workdir engine)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# dockerd and docker-proxy: docker's module is built with its own
# vendor.mod as go.mod (its tagged go.mod is the legacy one). The commit
# the tag names, as the module proxy says it, is what docker version shows.
commit=$(module_copy "$DOCKER_MODULE@$DOCKER_MODULE_VERSION" "$work/docker")
cp "$work/docker/vendor.mod" "$work/docker/go.mod"
cp "$work/docker/vendor.sum" "$work/docker/go.sum"
rm -rf "$work/docker/vendor"
echo "build-engine: dockerd $DOCKER_VERSION" >&2
(cd "$work/docker" && $go build -trimpath -o "$work/out/" \
	-ldflags "-s -w -X github.com/docker/docker/dockerversion.Version=$DOCKER_VERSION -X github.com/docker/docker/dockerversion.GitCommit=${commit:-$DOCKER_MODULE_VERSION}" \
	./cmd/dockerd ./cmd/docker-proxy)

# containerd and its shim, in one go install of the module at its version.
echo "build-engine: containerd $CONTAINERD_VERSION" >&2
revision=$(field "$(module_info "$CONTAINERD_MODULE@$CONTAINERD_MODULE_VERSION")" Hash)
GOBIN="$work/out" $go install -trimpath \
	-ldflags "-s -w -X $CONTAINERD_MODULE/version.Version=v$CONTAINERD_VERSION -X $CONTAINERD_MODULE/version.Revision=${revision:-$CONTAINERD_MODULE_VERSION}" \
	"$CONTAINERD_MODULE/cmd/containerd@$CONTAINERD_MODULE_VERSION" \
	"$CONTAINERD_MODULE/cmd/containerd-shim-runc-v2@$CONTAINERD_MODULE_VERSION"

finish "$work" "$dest" "${bins[@]}"
echo "$dest"

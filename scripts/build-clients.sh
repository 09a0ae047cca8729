#!/usr/bin/env bash
# Builds the clients the CLI tools image carries from pinned module
# versions (packs/versions.env): the docker CLI (github.com/docker/cli), the
# compose plugin (github.com/docker/compose/v5) and the buildx plugin
# (github.com/docker/buildx), static (CGO_ENABLED=0), -trimpath, with their
# real version strings, and the CLI's shell completions from its source.
# Each module's binary in one go build, inside a copy of the module (the
# CLI with its vendor.mod as go.mod; compose and buildx have exclude and
# replace directives that only a build inside them honours). Cached
# outside the checkout by version and Go version ($DDINIT_CACHE, default
# ~/.cache/ddinit): a second run with nothing changed rebuilds nothing.
# It prints the directory holding docker, docker-compose, docker-buildx
# and completion/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../packs/versions.env
. "$here/packs/versions.env"
# shellcheck source=modbuild.sh
. "$here/scripts/modbuild.sh"
dest=$cache/clients/docker-$DOCKER_CLI_VERSION-compose-$COMPOSE_VERSION-buildx-$BUILDX_VERSION-$goversion
outputs=(docker docker-compose docker-buildx completion/bash/docker completion/zsh/_docker completion/fish/docker.fish)
if cached "$dest" "${outputs[@]}"; then
	echo "$dest"
	exit 0
fi
work=$(workdir clients)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/out"

# The docker CLI: its own vendor.mod as go.mod, the swarmkit it names
# replaced by one the module proxy serves.
commit=$(module_copy "$DOCKER_CLI_MODULE@$DOCKER_CLI_MODULE_VERSION" "$work/cli")
cp "$work/cli/vendor.mod" "$work/cli/go.mod"
cp "$work/cli/vendor.sum" "$work/cli/go.sum"
rm -rf "$work/cli/vendor"
(cd "$work/cli" && $go mod edit -replace "${DOCKER_CLI_SWARMKIT%@*}=$DOCKER_CLI_SWARMKIT")
echo "build-clients: docker $DOCKER_CLI_VERSION" >&2
(cd "$work/cli" && $go build -trimpath -o "$work/out/docker" \
	-ldflags "-s -w -X github.com/docker/cli/cli/version.Version=$DOCKER_CLI_VERSION -X github.com/docker/cli/cli/version.GitCommit=${commit:-$DOCKER_CLI_MODULE_VERSION}" \
	./cmd/docker)
mkdir -p "$work/out/completion/bash" "$work/out/completion/zsh" "$work/out/completion/fish"
cp "$work/cli/contrib/completion/bash/docker" "$work/out/completion/bash/docker"
cp "$work/cli/contrib/completion/zsh/_docker" "$work/out/completion/zsh/_docker"
cp "$work/cli/contrib/completion/fish/docker.fish" "$work/out/completion/fish/docker.fish"

# The compose plugin, built inside its module.
module_copy "$COMPOSE_MODULE@$COMPOSE_MODULE_VERSION" "$work/compose" >/dev/null
echo "build-clients: compose $COMPOSE_VERSION" >&2
(cd "$work/compose" && $go build -trimpath -o "$work/out/docker-compose" \
	-ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=v$COMPOSE_VERSION" \
	./cmd)

# The buildx plugin, built inside its module.
revision=$(module_copy "$BUILDX_MODULE@$BUILDX_MODULE_VERSION" "$work/buildx")
echo "build-clients: buildx $BUILDX_VERSION" >&2
(cd "$work/buildx" && $go build -trimpath -o "$work/out/docker-buildx" \
	-ldflags "-s -w -X $BUILDX_MODULE/version.Version=v$BUILDX_VERSION -X $BUILDX_MODULE/version.Revision=${revision:-$BUILDX_MODULE_VERSION} -X $BUILDX_MODULE/version.Package=$BUILDX_MODULE" \
	./cmd/buildx)

finish "$work" "$dest" "${outputs[@]}"
echo "$dest"

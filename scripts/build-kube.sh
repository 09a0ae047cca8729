#!/usr/bin/env bash
# Builds Kubernetes from pinned module versions (packs/versions.env): one
# program, kube, that is kubelet, kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, etcd and CoreDNS (packs/kube/kube.go), built
# inside a copy of k8s.io/kubernetes so that the versions Kubernetes pins
# are the ones built; kubectl, for the distros; and pause, the sandbox's
# program (packs/kube/pause). Static (CGO_ENABLED=0), -trimpath, with their
# real version strings. Cached outside the checkout by versions, Go
# version and the hash of packs/kube ($DDINIT_CACHE, default
# ~/.cache/ddinit): a second run with nothing changed rebuilds nothing.
# It prints the directory holding kube, kubectl and pause; with --cached it
# builds nothing, and exits 3 when no build is cached. Two runs at once
# (CI starts one in the background, make isos another) take turns on a
# lock in the cache: the second finds the first's build there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../packs/versions.env
. "$here/packs/versions.env"
# shellcheck source=modbuild.sh
. "$here/scripts/modbuild.sh"
sources=$(cd "$here/packs/kube" && cat go.mod kube.go pause/pause.go | sha256sum | cut -c1-12)
dest=$cache/kube/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION-$sources-$goversion
bins=(kube kubectl pause)
if cached "$dest" "${bins[@]}"; then
	echo "$dest"
	exit 0
fi
# --cached: only say where a build already made is (exit 3: none is).
[ "${1:-}" = --cached ] && exit 3
mkdir -p "$cache/kube"
exec 9>"$cache/kube/.lock"
flock -n 9 || { echo "build-kube: waiting for the build another process is running" >&2; flock 9; }
if cached "$dest" "${bins[@]}"; then # that build, done
	echo "$dest"
	exit 0
fi
work=$(workdir kube)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/out"

# Kubernetes' module, its staging modules required at the version they
# are served at instead of replaced into folders the zip lacks, etcd and
# CoreDNS added at theirs.
info=$(module_info "$KUBERNETES_MODULE@$KUBERNETES_MODULE_VERSION")
commit=$(field "$info" Hash)
built=$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$(field "$info" Info)")
module_copy "$KUBERNETES_MODULE@$KUBERNETES_MODULE_VERSION" "$work/k8s" >/dev/null
(
	cd "$work/k8s"
	for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' go.mod); do
		$go mod edit -dropreplace="$m"
		# Only those it requires (the samples are replaced, not required).
		if grep -q "^[[:space:]]*$m v0.0.0" go.mod; then
			$go mod edit -require="$m@$KUBERNETES_STAGING_VERSION"
		fi
	done
	$go mod edit -require="$ETCD_MODULE@v$ETCD_VERSION" -require="$COREDNS_MODULE@v$COREDNS_VERSION"
	mkdir -p cmd/ddinit-kube
	cp "$here/packs/kube/kube.go" cmd/ddinit-kube/
)
minor=${KUBERNETES_VERSION#*.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=v$KUBERNETES_VERSION -X $pkg.gitMajor=${KUBERNETES_VERSION%%.*} -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitCommit=${commit:-$KUBERNETES_MODULE_VERSION} -X $pkg.gitTreeState=clean -X $pkg.buildDate=${built:-1970-01-01T00:00:00Z}"
done
echo "build-kube: kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, coredns $COREDNS_VERSION" >&2
(cd "$work/k8s" && GOWORK=off $go build -trimpath -ldflags "$ldflags" -o "$work/out/kube" ./cmd/ddinit-kube)
echo "build-kube: kubectl $KUBERNETES_VERSION" >&2
(cd "$work/k8s" && GOWORK=off $go build -trimpath -ldflags "$ldflags" -o "$work/out/kubectl" ./cmd/kubectl)
(cd "$here/packs/kube" && GOWORK=off $go build -trimpath -ldflags "-s -w" -o "$work/out/pause" ./pause)

finish "$work" "$dest" "${bins[@]}"
echo "$dest"

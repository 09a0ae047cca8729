#!/usr/bin/env bash
# Builds the images ddinit boots from, each with a .sha256 sidecar:
#   $OUT/docker-desktop.iso  the base distro: busybox, the usual directories, /etc
#   $OUT/docker.iso          the default version pack: dockerd, docker-proxy,
#                            containerd and its shim built from the pinned
#                            modules of packs/versions.env (scripts/build-engine.sh,
#                            cached outside the checkout); runc, docker-init
#                            (tini, as docker.io ships it) and iptables from Debian
#   $OUT/docker-20.10.iso    the older pack users upgrade from: the whole engine
#                            from Debian's packages (dockerd 20.10, containerd 1.6)
#   $OUT/cli-tools.iso       the clients every distro is offered: the docker CLI
#                            and its compose and buildx plugins, built from the
#                            pinned modules of packs/versions.env
#                            (scripts/build-clients.sh), and its completions;
#                            kubectl, from the Kubernetes build
#   $OUT/kubernetes.iso      Kubernetes: one program for its daemons, etcd and
#                            CoreDNS, built from the pinned modules of
#                            packs/versions.env (scripts/build-kube.sh, which
#                            waits for one already running), CNI's plugins
#                            from Debian, the pause image as an OCI layout
#                            (scripts/oci-image.sh) and kubernetes.json
# The same inputs give the same bytes (fixed dates, sorted trees; no
# --hardlinks, which would record the staging tree's own inode numbers).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/iso.sh"
out=${OUT:-$here/build}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

for tool in xorriso busybox ldd dpkg-query sha256sum; do
	command -v "$tool" >/dev/null || { echo "mkisos: $tool is missing (make deps installs it)" >&2; exit 1; }
done

mkdir -p "$out"
work=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$work"' EXIT

# copy_with_libs SRC DEST_IN_STAGE STAGE: a binary and every shared library
# ldd finds for it, each at its canonical (merged-/usr) path.
copy_file() { # src stage-relative-dest stage
	mkdir -p "$3/$(dirname "$2")"
	cp -L --preserve=mode "$1" "$3/$2"
}
canonical() { # path with its directory resolved, file name kept
	echo "$(readlink -f "$(dirname "$1")")/$(basename "$1")"
}
copy_libs() { # elf stage
	{ ldd "$1" 2>/dev/null || true; } | awk '/=>/ {print $3} /^[ \t]*\/.*\(0x/ {print $1}' | while read -r lib; do
		[ -e "$lib" ] || continue
		local dest
		dest=$(canonical "$lib")
		[ -e "$2$dest" ] || copy_file "$lib" "$dest" "$2"
	done
}

# --- base ---------------------------------------------------------------
base=$work/base
mkdir -p "$base"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,dev,proc,sys,run,tmp,var/lib,var/log,var/tmp,root,home,mnt,containers/services}
chmod 1777 "$base/tmp" "$base/var/tmp"
chmod 0700 "$base/root"
ln -s usr/bin "$base/bin"
ln -s usr/sbin "$base/sbin"
ln -s usr/lib "$base/lib"
ln -s usr/lib64 "$base/lib64"
cp --preserve=mode "$(readlink -f "$(command -v busybox)")" "$base/usr/bin/busybox"
busybox --list-full | while read -r applet; do
	case $applet in
	bin/*) dir=usr/bin ;;
	sbin/*) dir=usr/sbin ;;
	usr/bin/*) dir=usr/bin ;;
	usr/sbin/*) dir=usr/sbin ;;
	*) continue ;;
	esac
	name=$(basename "$applet")
	[ "$name" = busybox ] && continue
	[ -e "$base/$dir/$name" ] || ln -s /usr/bin/busybox "$base/$dir/$name"
done
cp -r "$here/distro/base/." "$base/"

# --- version packs --------------------------------------------------------
# The engine built from pinned sources (a second build is a cache hit).
built=$(bash "$here/scripts/build-engine.sh")
. "$here/packs/versions.env"
version() { dpkg-query -W -f='${Version}' "$1"; }

# make_pack STAGE FLAVOUR: a version pack's tree. FLAVOUR "default" takes
# dockerd, docker-proxy, containerd and its shim from the build; "20.10"
# takes the whole engine from Debian.
make_pack() {
	local pack=$1 flavour=$2
	mkdir -p "$pack"
	# crun runs ddinit's own tasks (dockerd, Kubernetes' services): it
	# creates and starts one in about a quarter of runc's time; runc stays
	# dockerd's runtime for users' containers.
	local debian=(/usr/sbin/runc /usr/bin/crun /usr/bin/docker-init /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi)
	local built_bins=()
	if [ "$flavour" = 20.10 ]; then
		debian+=(/usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/sbin/dockerd /usr/sbin/docker-proxy)
	else
		built_bins=(/usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/sbin/dockerd /usr/sbin/docker-proxy)
	fi
	for bin in "${debian[@]}"; do
		[ -x "$bin" ] || { echo "mkisos: $bin is missing (install containerd, runc, crun, docker.io and iptables)" >&2; exit 1; }
		copy_file "$bin" "$bin" "$pack"
		copy_libs "$bin" "$pack"
	done
	for bin in "${built_bins[@]}"; do
		copy_file "$built/$(basename "$bin")" "$bin" "$pack" # static: no libraries
	done
	# iptables loads its matches and targets with dlopen: ldd cannot see them.
	local xt=/usr/lib/x86_64-linux-gnu/xtables
	mkdir -p "$pack$xt"
	for so in "$xt"/*.so; do
		cp --preserve=mode "$so" "$pack$xt/"
		copy_libs "$so" "$pack"
	done
	for cmd in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -s xtables-nft-multi "$pack/usr/sbin/$cmd"
		ln -s xtables-nft-multi "$pack/usr/sbin/${cmd/tables/tables-nft}"
		ln -s xtables-legacy-multi "$pack/usr/sbin/${cmd/tables/tables-legacy}"
	done
	cp -r "$here/distro/pack/." "$pack/"
	# Debian's CA bundle where Go's crypto/x509 (dockerd, containerd) looks for
	# system roots first, so pulls from public registries verify.
	local bundle=/etc/ssl/certs/ca-certificates.crt
	[ -s "$bundle" ] || { echo "mkisos: $bundle is missing (install ca-certificates)" >&2; exit 1; }
	mkdir -p "$pack/etc/ssl/certs"
	cp "$bundle" "$pack/etc/ssl/certs/ca-certificates.crt"
	# A loader cache, so each exec (dockerd runs iptables dozens of times at
	# start) finds its libraries at once instead of probing every directory.
	printf '/usr/lib/x86_64-linux-gnu\n/usr/lib64\n' > "$pack/etc/ld.so.conf"
	ldconfig -r "$pack"

	# The manifest: every component, its version and where it comes from.
	local components=() deb
	if [ "$flavour" = 20.10 ]; then
		for c in "containerd containerd" "containerd-shim-runc-v2 containerd" "dockerd docker.io" "docker-proxy docker.io"; do
			set -- $c
			components+=("$1|$(version "$2")|debian:$2")
		done
	else
		components+=("containerd|$CONTAINERD_VERSION|$CONTAINERD_MODULE@$CONTAINERD_MODULE_VERSION")
		components+=("containerd-shim-runc-v2|$CONTAINERD_VERSION|$CONTAINERD_MODULE@$CONTAINERD_MODULE_VERSION")
		components+=("dockerd|$DOCKER_VERSION|$DOCKER_MODULE@$DOCKER_MODULE_VERSION")
		components+=("docker-proxy|$DOCKER_VERSION|$DOCKER_MODULE@$DOCKER_MODULE_VERSION")
	fi
	for c in "runc runc" "crun crun" "docker-init docker.io" "iptables iptables" "ca-certificates ca-certificates"; do
		set -- $c
		deb=$2
		components+=("$1|$(version "$deb")|debian:$deb")
	done
	{
		echo '{'
		printf '  "name": "docker-desktop version pack (dockerd %s)",\n' "$(for c in "${components[@]}"; do IFS='|' read -r n v _ <<<"$c"; [ "$n" = dockerd ] && echo "$v"; done)"
		echo '  "components": ['
		local sep=""
		for c in "${components[@]}"; do
			IFS='|' read -r n v src <<<"$c"
			printf '%s    {"name": "%s", "version": "%s", "source": "%s"}' "$sep" "$n" "$v" "$src"
			sep=$',\n'
		done
		printf '\n  ]\n}\n'
	} > "$pack/version-pack.json"
}
make_pack "$work/pack" default
make_pack "$work/pack-20.10" 20.10

# --- CLI tools --------------------------------------------------------------
# What ddinit run offers every distro, apart from the engine pack: the
# docker CLI, its compose and buildx plugins and the CLI's completions,
# built from pinned sources (a second build is a cache hit).
# kubectl comes from the Kubernetes build below.
clients=$(bash "$here/scripts/build-clients.sh")
kube=$(bash "$here/scripts/build-kube.sh")
tools=$work/cli-tools
mkdir -p "$tools/bin" "$tools/cli-plugins"
cp --preserve=mode "$clients/docker" "$tools/bin/docker"
cp --preserve=mode "$kube/kubectl" "$tools/bin/kubectl"
cp --preserve=mode "$clients/docker-compose" "$clients/docker-buildx" "$tools/cli-plugins/"
cp -r "$clients/completion" "$tools/completion"
cat > "$tools/cli-tools.json" <<JSON
{
  "name": "docker-desktop CLI tools",
  "components": [
    {"name": "docker", "version": "$DOCKER_CLI_VERSION", "source": "$DOCKER_CLI_MODULE@$DOCKER_CLI_MODULE_VERSION"},
    {"name": "docker-compose", "version": "$COMPOSE_VERSION", "source": "$COMPOSE_MODULE@$COMPOSE_MODULE_VERSION"},
    {"name": "docker-buildx", "version": "$BUILDX_VERSION", "source": "$BUILDX_MODULE@$BUILDX_MODULE_VERSION"},
    {"name": "kubectl", "version": "$KUBERNETES_VERSION", "source": "$KUBERNETES_MODULE@$KUBERNETES_MODULE_VERSION"}
  ]
}
JSON

# --- Kubernetes -------------------------------------------------------------
# An image of its own, verified and unpacked only once the kubernetes
# setting is on, and apart from the engine pack so that an engine rollback
# never moves it (docs/kubernetes.md).
k8s=$work/kubernetes
mkdir -p "$k8s/usr/bin" "$k8s/usr/lib/cni" "$k8s/images"
cp --preserve=mode "$kube/kube" "$k8s/usr/bin/kube" # static: no libraries
# CNI's plugins from Debian (no Go module of theirs is built here). They
# link only glibc, which every version pack carries: the binaries alone,
# checked to need nothing else.
for plugin in bridge host-local portmap loopback; do
	bin=/usr/lib/cni/$plugin
	[ -x "$bin" ] || { echo "mkisos: $bin is missing (install containernetworking-plugins: make deps)" >&2; exit 1; }
	other=$({ ldd "$bin" 2>/dev/null || true; } | awk '/=>/ {print $1} /^[ \t]*\/.*\(0x/ {print $1}' | grep -v -e '^libc\.so\.6$' -e '/ld-linux-x86-64\.so\.2$' || true)
	[ -z "$other" ] || { echo "mkisos: $bin needs more than glibc, which the packs carry: $other" >&2; exit 1; }
	cp --preserve=mode "$bin" "$k8s/usr/lib/cni/$plugin"
done
# The pod sandbox's image, imported into containerd's k8s.io namespace at
# start and pinned there, so the CRI never pulls it.
pause_image=ddinit.internal/pause:$KUBERNETES_VERSION
bash "$here/scripts/oci-image.sh" "$k8s/images/pause.tar" "$pause_image" "$kube/pause:/pause" -- /pause
{
	echo '{'
	echo '  "name": "docker-desktop Kubernetes",'
	printf '  "pauseImage": "%s",\n' "$pause_image"
	echo '  "components": ['
	sep=""
	for c in kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
		printf '%s    {"name": "%s", "version": "%s", "source": "%s"}' "$sep" "$c" "$KUBERNETES_VERSION" "$KUBERNETES_MODULE@$KUBERNETES_MODULE_VERSION"
		sep=$',\n'
	done
	printf '%s    {"name": "etcd", "version": "%s", "source": "%s"}' "$sep" "$ETCD_VERSION" "$ETCD_MODULE@v$ETCD_VERSION"
	printf '%s    {"name": "coredns", "version": "%s", "source": "%s"}' "$sep" "$COREDNS_VERSION" "$COREDNS_MODULE@v$COREDNS_VERSION"
	printf '%s    {"name": "cni-plugins", "version": "%s", "source": "debian:containernetworking-plugins"}' "$sep" "$(version containernetworking-plugins)"
	printf '%s    {"name": "pause", "version": "%s", "source": "this repository (packs/kube/pause)"}' "$sep" "$KUBERNETES_VERSION"
	printf '\n  ]\n}\n'
} > "$k8s/kubernetes.json"

# --- write ----------------------------------------------------------------
mkiso() { # stage volume-id output
	write_iso "$1" "$2" "$3" "$work/xorriso.log"
	echo "mkisos: $3 $(stat -c %s "$3") bytes sha256:$(cut -d' ' -f1 "$3.sha256")"
}
mkiso "$base" DDINIT_BASE "$out/docker-desktop.iso"
mkiso "$work/pack" DDINIT_PACK "$out/docker.iso"
mkiso "$work/pack-20.10" DDINIT_PACK_2010 "$out/docker-20.10.iso"
mkiso "$tools" DDINIT_CLI_TOOLS "$out/cli-tools.iso"
mkiso "$k8s" DDINIT_KUBERNETES "$out/kubernetes.iso"

# Sourced by build-engine.sh and build-clients.sh: building binaries from
# pinned module versions, cached outside the checkout.
#   $go, $goversion   the Go toolchain and its version (the cache key's end)
#   $cache            ${DDINIT_CACHE:-~/.cache/ddinit}
#   module_info MOD@VER   go mod download -json's answer (sums checked by go)
#   field JSON NAME       one string field of such an answer (Dir, Hash)
#   module_copy MOD@VER DIR   a writable copy of the module's source at DIR
#                             (prints the commit the tag names, 7 digits)
go=${GO:-go}
goversion=$($go env GOVERSION)
cache=${DDINIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ddinit}
# No DWARF from the compiler: every binary is linked with -s -w, which
# drops it anyway, and making it cost ~9% of a cold build's CPU (the
# clients, one cold build each way: 595 against 657 CPU-seconds).
export CGO_ENABLED=0 GOFLAGS="-mod=mod -gcflags=all=-dwarf=false" GOTOOLCHAIN=local

module_info() { $go mod download -json "$1"; }

field() { sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}$/\1/p" <<<"$1" | head -1; }

module_copy() {
	local info src hash
	info=$(module_info "$1")
	src=$(field "$info" Dir)
	[ -d "$src" ] || { echo "$1 did not download" >&2; return 1; }
	cp -r "$src" "$2"
	chmod -R u+w "$2"
	hash=$(field "$info" Hash)
	echo "${hash:0:7}"
}

# cached DEST FILE...: succeeds when every FILE is in DEST, not empty.
cached() {
	local dest=$1 f
	shift
	for f in "$@"; do [ -s "$dest/$f" ] || return 1; done
}

# workdir KIND: a scratch folder in the cache for a build of KIND, removed
# when the script exits (printed; the caller sets its EXIT trap from it).
workdir() {
	mkdir -p "$cache/$1"
	mktemp -d "$cache/$1/.build.XXXXXX"
}

# finish WORK DEST FILE...: checks every FILE was built in WORK/out and
# puts it in place as DEST, whole.
finish() {
	local work=$1 dest=$2 f
	shift 2
	for f in "$@"; do [ -s "$work/out/$f" ] || { echo "$f was not built" >&2; return 1; }; done
	rm -rf "$dest"
	mv "$work/out" "$dest"
}

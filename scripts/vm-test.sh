#!/usr/bin/env bash
# make vm-test: boots a qemu guest (TCG) that plays WSL's utility VM —
# /mnt/wsl shared, the C: drive over virtio-9p with the ISO images in
# Docker Desktop's install folder, an ext4 data disk, vsock loopback — and
# runs ddinit there exactly as the distro's boot command would. A driver
# inside plays the Windows frontend over AF_VSOCK. One line per check,
# then `vm-test: N passed, M failed`; exits non-zero when M > 0.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
vm=${VM_DIR:-$here/build/vm}
kver=${VM_KERNEL:-}
timeout=${VM_TIMEOUT:-480}
# The Kubernetes phase's own budget: the cluster's seven components start
# on an emulated CPU.
kube_timeout=${VM_KUBE_TIMEOUT:-1200}
# VM_ONLY=kubernetes runs that phase alone, on a new data disk (for work
# on it); the default runs every phase.
only=${VM_ONLY:-}
case "$only" in "" | kubernetes) ;; *) echo "vm-test: VM_ONLY=$only: only kubernetes can run alone" >&2; exit 1 ;; esac

need() { command -v "$1" >/dev/null || { echo "vm-test: $1 is missing (make deps installs it)" >&2; exit 1; }; }
for t in qemu-system-x86_64 busybox mkfs.ext4 fsck.ext4 depmod modprobe cpio; do need "$t"; done
# VM_DDINIT: the ddinit to boot (default bin/ddinit); CI gives a copy, as
# make test rebuilds bin/ddinit while the VM runs beside it.
ddinit_bin=${VM_DDINIT:-$here/bin/ddinit}
[ -x "$ddinit_bin" ] || { echo "vm-test: $ddinit_bin is missing: run make build isos first" >&2; exit 1; }
for f in build/docker.iso build/kubernetes.iso build/cli-tools.iso; do
	[ -e "$here/$f" ] || { echo "vm-test: $f is missing: run make build isos first" >&2; exit 1; }
done
mkdir -p "$vm"

# --- the kernel: Debian's, unpacked without running its install scripts ---
if [ -z "$kver" ]; then
	kver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)/\1/p' | head -1)
fi
[ -n "$kver" ] || { echo "vm-test: no linux-image-amd64 known to apt (apt-get update?)" >&2; exit 1; }
kdir=$vm/kernel-$kver
if [ ! -f "$kdir/boot/vmlinuz-$kver" ]; then
	rm -rf "$kdir" "$vm/deb"
	mkdir -p "$vm/deb"
	(cd "$vm/deb" && apt-get download "linux-image-$kver" >/dev/null 2>&1) || { echo "vm-test: cannot download linux-image-$kver" >&2; exit 1; }
	dpkg -x "$vm"/deb/linux-image-*.deb "$kdir"
	depmod -b "$kdir" "$kver"
	rm -rf "$vm/deb"
fi
mods=$kdir/lib/modules/$kver
show_deps() { modprobe -d "$kdir" -S "$kver" --show-depends "$1" | awk '/^insmod/ {print $2}' | sed "s|.*/lib/modules/$kver/||"; }

# --- the guest's root: busybox, ddinit, the docker CLI, modules ---------------
root=$vm/root
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/vm,etc/ddinit,proc,sys,dev,run,tmp,var/tmp,mnt/wsl,mnt/host/c,mnt/host/d,results,root,lib/modules}
cp "$(readlink -f "$(command -v busybox)")" "$root/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
for a in $(busybox --list); do [ -e "$root/sbin/$a" ] || ln -sf ../bin/busybox "$root/sbin/$a"; done
install -m 0755 "$ddinit_bin" "$root/usr/bin/ddinit"
# The transport tests that need real AF_VSOCK loopback run in the guest.
(cd "$here" && CGO_ENABLED=0 go test -c -o "$root/usr/bin/transport.test" ./transport)
# The chroot break-out program the isolation check runs in containers.
(cd "$here" && CGO_ENABLED=0 go build -o "$root/usr/bin/breakout" ./e2e/testdata/breakout)
docker_cli=$(command -v docker)
install -m 0755 "$(readlink -f "$docker_cli")" "$root/usr/bin/docker"
{ ldd "$docker_cli" 2>/dev/null || true; } | awk '/=>/ {print $3} /^[ \t]*\/.*\(0x/ {print $1}' | while read -r lib; do
	[ -e "$lib" ] || continue
	dest=$root$(readlink -f "$(dirname "$lib")")/$(basename "$lib")
	mkdir -p "$(dirname "$dest")"
	cp -L "$lib" "$dest"
	mkdir -p "$root$(dirname "$lib")"
	[ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
done
mkdir -p "$root/lib/modules/$kver/kernel/drivers"
for d in net fs lib crypto arch; do cp -r "$mods/kernel/$d" "$root/lib/modules/$kver/kernel/"; done
for d in virtio block cdrom; do cp -r "$mods/kernel/drivers/$d" "$root/lib/modules/$kver/kernel/drivers/"; done
mkdir -p "$root/lib/modules/$kver/kernel/drivers/net"
cp "$mods/kernel/drivers/net/"{veth,tun,dummy}.ko "$root/lib/modules/$kver/kernel/drivers/net/" 2>/dev/null || true
cp "$mods"/modules.* "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
cp -r "$here/distro/base/etc/." "$root/etc/"
# The distro's config, with a longer deadline for a new pack's dockerd
# (60 s by default): under emulation, beside make test in CI, a boot on
# pack2 once took longer and was rolled back, failing the packs phase.
sed 's|^  "idleStop": "5m",$|  "idleStop": "5m",\n  "settingsDeadline": "4m",|' "$here/distro/wsl/etc/ddinit/config.json" >"$root/etc/ddinit/config.json"
grep -q '"settingsDeadline"' "$root/etc/ddinit/config.json" || { echo "vm-test: the guest's config lacks settingsDeadline" >&2; exit 1; }
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"
install -m 0755 "$here/scripts/vm/vm-init" "$root/sbin/vm-init"
install -m 0644 "$here/scripts/vm/driver.sh" "$root/etc/vm/driver.sh"
cat >"$root/etc/vm/modules" <<'EOF'
virtio_blk ext4 overlay isofs loop veth bridge br_netfilter nf_conntrack nf_nat nf_tables nft_chain_nat nft_compat
xt_MASQUERADE xt_addrtype xt_conntrack xt_comment ip_tables iptable_nat iptable_filter vsock vsock_loopback ipv6
EOF
# What the cluster needs besides (its phase only: the others boot without
# them): the matches and targets of kube-proxy's and the CNI plugins'
# iptables rules (nft, through nft_compat: mark, statistic, recent,
# nfacct, DNAT, REJECT, multiport), conntrack over netlink. The kernel
# would load most on demand through busybox's modprobe; loaded here, the
# guest does not depend on it.
cat >"$root/etc/vm/modules.kubernetes" <<'EOF'
nf_conntrack_netlink nft_ct nft_nat nft_masq nft_reject_inet nfnetlink_acct xt_nfacct
xt_mark xt_statistic xt_recent xt_nat xt_multiport xt_tcpudp ipt_REJECT ip6t_REJECT
EOF

# --- the initramfs: just enough to mount the 9p root ------------------------
init=$vm/initramfs
rm -rf "$init"
mkdir -p "$init/bin" "$init/modules"
cp "$(readlink -f "$(command -v busybox)")" "$init/bin/busybox"
install -m 0755 "$here/scripts/vm/initramfs-init" "$init/init"
: >"$init/modules.load"
# virtio-rng seeds the guest's CRNG at boot, as Hyper-V's seed does for
# WSL's kernel; without it getrandom() in dockerd and containerd waits on
# interrupt and jitter entropy, which under TCG depends on the host's timing.
for m in virtio_pci 9pnet_virtio 9p virtio-rng; do
	for f in $(show_deps "$m"); do
		b=$(basename "$f")
		grep -qx "$b" "$init/modules.load" || { cp "$mods/$f" "$init/modules/$b"; echo "$b" >>"$init/modules.load"; }
	done
done
(cd "$init" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$vm/initramfs.cpio.gz"

# --- Windows' side: the C: drive and the data disk --------------------------
c=$vm/c
rm -rf "$c" "$vm/results"
res="$c/Program Files/Docker/Docker/resources"
mkdir -p "$res" "$vm/results"
for iso in docker-desktop.iso docker.iso; do
	ln "$here/build/$iso" "$res/$iso" 2>/dev/null || cp "$here/build/$iso" "$res/$iso"
	cp "$here/build/$iso.sha256" "$res/$iso.sha256"
done
# The second version pack the guest switches to and back.
ln "$here/build/test-packs/pack2.iso" "$res/pack2.iso" 2>/dev/null || cp "$here/build/test-packs/pack2.iso" "$res/pack2.iso"
cp "$here/build/test-packs/pack2.iso.sha256" "$res/pack2.iso.sha256"
# A 200 MB image in `docker save` form, for the memory given back: one
# layer of random bytes (nothing to compress or share).
python3 - "$c/big.tar" <<'PY'
import hashlib, io, json, os, sys, tarfile, tempfile
out = sys.argv[1]
with tempfile.TemporaryFile() as layer:
    with tarfile.open(fileobj=layer, mode="w") as lt:
        info = tarfile.TarInfo("big/blob")
        info.size = 200 << 20
        data = io.BytesIO(os.urandom(info.size))
        lt.addfile(info, data)
    layer.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: layer.read(1 << 20), b""):
        h.update(chunk)
    diff = h.hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]}}).encode()
    cid = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": cid + ".json", "RepoTags": ["big:local"], "Layers": [diff + "/layer.tar"]}]).encode()
    with tarfile.open(out, mode="w") as t:
        for name, b in ((cid + ".json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(b)
            t.addfile(info, io.BytesIO(b))
        layer.seek(0, 2)
        info = tarfile.TarInfo(diff + "/layer.tar")
        info.size = layer.tell()
        layer.seek(0)
        t.addfile(info, layer)
PY
echo "written by the host at $(date -u +%FT%TZ) $RANDOM" >"$c/hello.txt"
# D:, a second drive the guest mounts only after ddinit has booted.
d=$vm/d
rm -rf "$d"
mkdir -p "$d"
echo "on drive D, mounted after the boot $RANDOM" >"$d/hello.txt"
# The data disk is sparse; a host disk that fills up under it would pause
# the guest (werror=report turns that into an I/O error the guest reports).
# discard=unmap: the guest's trim (ddinit trims the data store when the
# engine stops idle) punches holes in the image; without it a trim reports
# success and the image does not shrink.
free_kb=$(df -Pk "$vm" | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $((3 * 1024 * 1024)) ]; then
	echo "vm-test: only $((free_kb / 1024)) MB free under $vm; the guest's data disk needs 3 GB" >&2
	exit 1
fi
rm -f "$vm/data.img"
truncate -s 4G "$vm/data.img"
mkfs.ext4 -q -F "$vm/data.img"

qemu() { # phase [timeout]
	timeout "${2:-$timeout}" qemu-system-x86_64 -accel tcg -smp 2 -m 3072 -nographic -no-reboot \
		-kernel "$kdir/boot/vmlinuz-$kver" -initrd "$vm/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet panic=-1 vmtest.phase=$1 vmtest.timeout=${2:-$timeout}" \
		-virtfs "local,path=$root,mount_tag=root,security_model=none,readonly=on" \
		-virtfs "local,path=$c,mount_tag=cdrive,security_model=none" \
		-virtfs "local,path=$d,mount_tag=ddrive,security_model=none,readonly=on" \
		-virtfs "local,path=$vm/results,mount_tag=results,security_model=none" \
		-device virtio-rng-pci \
		-drive "file=$vm/data.img,if=virtio,format=raw,discard=unmap,werror=report,rerror=report"
}
report=$vm/results/report
hostline() { echo "$1 $2" >>"$report"; }

# run_phase PHASE [TIMEOUT]: one guest boot (VM_TIMEOUT unless given); a
# guest that does not power off in time is a failure of its own (its
# console log says how far it got). A guest
# whose own kernel stalled (soft lockups, RCU starved: the emulated CPUs
# starved by a busy host under TCG, before ddinit could do anything) runs
# the phase once more, and the report says so.
run_phase() {
	local rc=0 t=${2:-$timeout}
	guest "$1" "$t" || rc=$?
	if [ "$rc" -eq 124 ] && grep -qE "soft lockup|rcu_preempt kthread starved" "$vm/results/qemu-$1.log"; then
		mv "$vm/results/qemu-$1.log" "$vm/results/qemu-$1-stalled.log"
		[ -f "$report" ] && sed -i "/^[A-Z]* $1: /d" "$report"
		hostline NOTE "host: the $1 guest's kernel stalled under emulation (soft lockup); the phase ran again"
		rc=0
		guest "$1" "$t" || rc=$?
	fi
	[ "$rc" -eq 124 ] && hostline FAIL "host: the $1 guest did not power off within ${t}s (killed)"
	return 0
}
# stalled LOG: the guest's kernel reported a CPU stuck for a minute or more
# (a soft lockup): under TCG on a busy host it does not come back in time
# for the phase, so waiting out the whole timeout only delays the run again.
stalled() {
	grep -oE "soft lockup - CPU#[0-9]+ stuck for [0-9]+s" "$1" 2>/dev/null |
		awk '{ s = $NF; sub(/s$/, "", s); if (s + 0 >= 60) found = 1 } END { exit !found }'
}
# guest PHASE TIMEOUT: one guest boot, answering what it asks of the host
# (the data disk image's allocated size, in KiB: results/ask.NAME → NAME). A
# guest whose kernel stalled is killed at once, as the timeout would
# have (status 124).
guest() {
	qemu "$1" "$2" </dev/null >"$vm/results/qemu-$1.log" 2>&1 &
	local qpid=$! ask n=0 stuck=0
	while kill -0 $qpid 2>/dev/null; do
		for ask in "$vm"/results/ask.*; do
			[ -e "$ask" ] || continue
			du -k "$vm/data.img" | cut -f1 >"$vm/results/${ask##*/ask.}.tmp"
			mv "$vm/results/${ask##*/ask.}.tmp" "$vm/results/${ask##*/ask.}"
			rm -f "$ask"
		done
		n=$((n + 1))
		if [ $((n % 10)) -eq 0 ] && stalled "$vm/results/qemu-$1.log"; then
			stuck=1
			pkill -9 -f "qemu-system-x86_64.*vmtest.phase=$1( |\$)" || true
		fi
		sleep 0.3
	done
	local rc=0
	wait $qpid || rc=$?
	[ "$stuck" -eq 1 ] && return 124
	return $rc
}
healthy_in() { grep -q "^PASS $1: healthy" "$report" 2>/dev/null; }

# kube_images: the Kubernetes image and the CLI tools (kubectl) join the
# others in the C: drive's resources folder, as Docker Desktop installs
# them; only now, so the other phases' boots do not unpack the CLI tools.
kube_images() {
	for iso in kubernetes.iso cli-tools.iso; do
		ln "$here/build/$iso" "$res/$iso" 2>/dev/null || cp "$here/build/$iso" "$res/$iso"
		cp "$here/build/$iso.sha256" "$res/$iso.sha256"
	done
}

echo "vm-test: kernel $kver, guest in $vm (console logs in $vm/results)"
begin=$(date +%s)
if [ -z "$only" ]; then
	# 1. Cold boot, the C: drive, a volume, kill -9 dockerd, clean shutdown.
	run_phase cold
	# 4. The data disk is clean after that shutdown.
	if fsck.ext4 -n "$vm/data.img" >"$vm/results/fsck.log" 2>&1; then
		hostline PASS "host: the data disk passes fsck -n after the clean shutdown"
	else
		hostline FAIL "host: fsck -n found errors on the data disk (see results/fsck.log)"
	fi
fi
if [ -z "$only" ] && healthy_in cold; then
	# 2+5. Warm boot on the kernel path, then a hard stop while a container writes.
	qemu warm </dev/null >"$vm/results/qemu-warm.log" 2>&1 &
	qpid=$!
	synced=0
	for i in $(seq 1 $((timeout * 2))); do
		synced=$(awk '{print $2}' "$vm/results/last-synced" 2>/dev/null || echo 0)
		[ "${synced:-0}" -ge 5 ] 2>/dev/null && break
		kill -0 $qpid 2>/dev/null || break
		sleep 0.5
	done
	pkill -9 -f "qemu-system-x86_64.*vmtest.phase=warm" || true
	wait $qpid 2>/dev/null || true
	if [ "${synced:-0}" -ge 5 ] 2>/dev/null; then
		hostline PASS "host: qemu killed while a container writes (last synced: $synced)"
	else
		hostline FAIL "host: the writer never reported 5 synced writes (last: ${synced:-none})"
	fi
	# 5. The next boot is healthy and has what was synced.
	healthy_in warm && run_phase after-crash
	# 6. Idle: the pause, memory and disk given back; then a version-pack
	# switch at the next boot and back.
	run_phase idle
	written=$(cat "$vm/results/du-written" 2>/dev/null || echo 0)
	trimmed=$(cat "$vm/results/du-trimmed" 2>/dev/null || echo 0)
	if [ "$written" -gt 0 ] && [ "$trimmed" -gt 0 ] && [ $((written - trimmed)) -ge $((400 * 1024)) ]; then
		hostline PASS "host: the data disk image shrank by $(((written - trimmed) / 1024)) MB once the 500 MB were removed and the engine stopped idle (trim)"
	else
		hostline FAIL "host: the data disk image went from ${written} KiB to ${trimmed} KiB after the removal and the idle stop; want 400 MB less"
	fi
	run_phase packs
elif [ -z "$only" ]; then
	hostline FAIL "host: the cold boot never became healthy; the warm, after-crash, idle, packs and kubernetes boots are skipped"
fi
# 7. Kubernetes on (cgroup v2, as WSL's), a pod, in a phase with a budget
# of its own: the last, on the data disk the others left.
kube_checks=7
if [ -n "$only" ] || healthy_in cold; then
	kube_images
	kube_begin=$(date +%s)
	run_phase kubernetes "$kube_timeout"
	echo "vm-test: the kubernetes phase took $(( $(date +%s) - kube_begin ))s (budget ${kube_timeout}s)"
fi

cat "$report"
passed=$(grep -c '^PASS' "$report" || true)
failed=$(grep -c '^FAIL' "$report" || true)
if [ -n "$only" ]; then
	expected=$kube_checks
else
	expected=$((31 + kube_checks))
fi
if [ "$failed" -gt 0 ] || [ "$passed" -lt "$expected" ]; then
	# What CI shows is all there is to go on: the end of each guest's logs.
	for phase in cold warm after-crash idle packs kubernetes; do
		for f in console-$phase.log ddinit-$phase.log qemu-$phase.log; do
			[ -s "$vm/results/$f" ] || continue
			echo "---- last lines of results/$f"
			tail -n 25 "$vm/results/$f" | cut -c1-400
		done
	done
	# The cluster's own logs, as the guest copied them from the data store.
	for f in kubelet containerd kube-apiserver kube-proxy; do
		[ -s "$vm/results/kubernetes-logs/$f.log" ] || continue
		echo "---- last lines of results/kubernetes-logs/$f.log"
		tail -n 15 "$vm/results/kubernetes-logs/$f.log" | cut -c1-400
	done
fi
echo "vm-test: took $(( $(date +%s) - begin ))s"
echo "vm-test: $passed passed, $failed failed"
if [ "$passed" -lt "$expected" ] && [ "$failed" -eq 0 ]; then
	echo "vm-test: only $passed of $expected checks reported (a guest stopped early: see $vm/results/*.log)" >&2
	exit 1
fi
[ "$failed" -eq 0 ]

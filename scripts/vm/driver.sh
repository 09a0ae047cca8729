#!/bin/sh
# The frontend's stand-in inside the guest: boots ddinit the way the
# distro's boot command does, then checks one phase of the scenario over
# AF_VSOCK to CID 1. Each check writes "PASS name detail" or
# "FAIL name detail" to /results/report.
phase=$1
report=/results/report
control=vsock://1:61000
pass() { echo "PASS $*" >>"$report"; echo "PASS $*"; }
fail() { echo "FAIL $*" >>"$report"; echo "FAIL $*"; }
check() { name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
# check_all NAME 'CONDITION && CONDITION…': a check of several conditions
# (check's own arguments end at the first &&).
check_all() { if eval "$2"; then pass "$1"; else fail "$1"; fi; }
elapsed() { echo $(( $(date +%s) - start )); }
# ask_host NAME: the host measures something of its own (the data disk
# image's size) while the guest waits; it answers in /results/NAME.
ask_host() {
	rm -f "/results/$1"
	: >"/results/ask.$1"
	for i in $(seq 1 120); do [ -s "/results/$1" ] && return 0; sleep 0.5; done
	fail "$phase: the host did not answer $1"
}

start=$(date +%s)
# boot_ddinit: as the distro's boot command does (again, after a stop, in
# the same guest: a switch to another version pack).
boot_ddinit() {
	ddinit run --config /etc/ddinit/config.json --vsock-allow-local --log-level debug >>/results/ddinit-$phase.log 2>&1 &
	ddinit_pid=$!
}
boot_ddinit

# The frontend polls health over vsock until ddinit says healthy.
# Every 30 s of waiting leaves a line in the console log saying why.
healthy() {
	deadline=$(( $(date +%s) + $1 ))
	next_note=$(( $(date +%s) + 30 ))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if [ "$(date +%s)" -ge "$next_note" ]; then
			echo "still waiting after $(elapsed)s: $(tail -1 /tmp/probe.err 2>/dev/null)"
			next_note=$(( next_note + 30 ))
		fi
		if timeout 20 ddinit probe --timeout 5s "$control" >/tmp/probe.json 2>/tmp/probe.err; then
			return 0
		fi
		if ! kill -0 "$ddinit_pid" 2>/dev/null; then
			tail -1 /results/ddinit-$phase.log >/tmp/probe.err
			return 1
		fi
		sleep 0.5
	done
	cat /tmp/probe.err
	return 1
}
if healthy 400; then
	pass "$phase: healthy over vsock after $(elapsed)s"
else
	fail "$phase: not healthy over vsock after $(elapsed)s: $(tail -1 /tmp/probe.err)"
	timeout 20 ddinit status --control "$control" 2>&1 | head -40
	grep -E '"level":"(warning|error|fatal)"' /results/ddinit-$phase.log | tail -15
	echo "guest: uptime $(cut -d' ' -f1 /proc/uptime)s, entropy $(cat /proc/sys/kernel/random/entropy_avail), $(dmesg | grep -c 'crng init done') crng-init lines, load $(cat /proc/loadavg)"
	ps | grep -v ' \[' | head -30
	exit 0
fi
timeout 20 ddinit status --control "$control" >/tmp/status.txt 2>&1
cp /tmp/probe.json /results/status-$phase.json
phases=$(grep '^boot:' /tmp/status.txt)
echo "$phases"

# Docker through `ddinit forward`, as the frontend's named-pipe proxy.
ddinit forward --listen unix:///tmp/docker.sock --to vsock://1:61001 >/tmp/forward.log 2>&1 &
export DOCKER_HOST=unix:///tmp/docker.sock
for i in $(seq 1 100); do timeout 10 docker version >/dev/null 2>&1 && break; sleep 0.2; done
if ! timeout 30 docker image inspect busybox:local >/dev/null 2>&1; then
	mkdir -p /tmp/img/bin
	cp /bin/busybox /tmp/img/bin/busybox
	for a in sh echo cat ls sleep sync mkdir dd; do ln -s busybox /tmp/img/bin/$a; done
	tar -C /tmp/img -cf /tmp/img.tar .
	timeout 120 docker import /tmp/img.tar busybox:local >/dev/null
fi

case "$phase" in
cold)
	pass "cold: boot phases printed: ${phases#boot: }"
	# cgroup v2 alone, as in WSL: ddinit's own tasks run under the pack's
	# crun, users' containers under dockerd's runc.
	runtime=$(awk '$1 == "dockerd" { print $4 }' /tmp/status.txt)
	id=$(timeout 60 docker run -d busybox:local sleep 600 2>/dev/null)
	users=$(timeout 30 docker inspect -f '{{.HostConfig.Runtime}}' "$id" 2>&1)
	timeout 60 docker rm -f "$id" >/dev/null 2>&1
	check_all "cold: dockerd runs under $runtime (want crun), a user's container under $users (want runc)" '[ "$runtime" = crun ] && [ "$users" = runc ]'
	timeout 120 transport.test -test.run 'TestRealVsockLoopback|TestPeerFilter' -test.v >/results/vsock-test.log 2>&1
	if grep -q -- '--- PASS: TestRealVsockLoopback' /results/vsock-test.log; then
		pass "cold: the transport's real AF_VSOCK test passes (round trip, peer filter)"
	else
		fail "cold: the real AF_VSOCK test did not pass: $(grep -E -- '--- (FAIL|SKIP)|loopback_test' /results/vsock-test.log | head -2 | tr '\n' ' ')"
	fi
	out=$(timeout 180 docker run --rm -v /run/desktop/mnt/host/c/hello.txt:/f busybox:local cat /f 2>&1)
	check "cold: a container reads the file the host wrote on the 9p C: drive ($out)" [ "$out" = "$(cat /mnt/host/c/hello.txt)" ]
	out=$(timeout 180 docker run --rm -v vmvol:/data busybox:local sh -c 'echo persisted-across-boots > /data/f && sync && cat /data/f' 2>&1)
	check "cold: a container writes a named volume ($out)" [ "$out" = "persisted-across-boots" ]
	# The docker API proxy on the vsock socket maps a Windows-style path.
	out=$(timeout 180 docker run --rm -v /c/hello.txt:/f busybox:local cat /f 2>&1)
	check "cold: through the proxy on vsock, -v /c/hello.txt reads C: ($out)" [ "$out" = "$(cat /mnt/host/c/hello.txt)" ]
	# A drive WSL mounts after the boot, under an automount root that is
	# not shared (as WSL's is not), reaches containers.
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none ddrive /mnt/host/d
	want=$(cat /mnt/host/d/hello.txt)
	sleep 2
	out=$(timeout 120 docker run --rm -v /run/desktop/mnt/host/d/hello.txt:/f busybox:local cat /f 2>&1)
	check "cold: a container reads a 9p drive mounted after the boot, 2s later ($out)" [ "$out" = "$want" ]
	# Isolation: exec lands in the container's root, and a chroot walk from
	# docker run or docker exec finds only the container. /etc/vm/driver.sh
	# exists only on the guest distro's root.
	timeout 120 docker run -d --name iso busybox:local sleep 600 >/dev/null 2>&1
	echo "copied in" >/tmp/copied.txt
	timeout 60 docker cp /tmp/copied.txt iso:/copied.txt >/dev/null 2>&1
	timeout 60 docker cp /usr/bin/breakout iso:/breakout >/dev/null 2>&1
	got=$(timeout 60 docker exec iso cat /copied.txt 2>&1)
	leak=$(timeout 60 docker exec iso cat /etc/vm/driver.sh 2>/dev/null | head -1)
	check_all "cold: docker exec reads what docker cp put in the container, not the distro's files ($got)" '[ "$got" = "copied in" ] && [ -z "$leak" ]'
	from_exec=$(timeout 60 docker exec iso /breakout /etc/vm/driver.sh 2>&1)
	timeout 60 docker create --name bo busybox:local /breakout /etc/vm/driver.sh >/dev/null 2>&1
	timeout 60 docker cp /usr/bin/breakout bo:/breakout >/dev/null 2>&1
	from_run=$(timeout 60 docker start -a bo 2>&1)
	contained() { case "$1" in *'"marker":false'*'"breakout"'*|*'"breakout"'*'"marker":false'*) case "$1" in *'"usr"'*|*error*) return 1 ;; esac ;; *) return 1 ;; esac; }
	if contained "$from_exec" && contained "$from_run"; then
		pass "cold: a chroot walk from docker run and docker exec stays in the container"
	else
		fail "cold: a chroot walk got out: exec $from_exec; run $from_run"
	fi
	timeout 60 docker rm -f iso bo >/dev/null 2>&1
	# kill -9 dockerd: the frontend's probe sees 503, then 200.
	killall -9 dockerd
	saw503=no
	deadline=$(( $(date +%s) + 120 ))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if timeout 20 ddinit probe --timeout 5s "$control" >/dev/null 2>/tmp/p.err; then
			[ "$saw503" = yes ] && break
		else
			grep -q dockerd /tmp/p.err && saw503=yes
		fi
		sleep 0.1
	done
	if [ "$saw503" = yes ] && healthy 60; then
		pass "cold: after kill -9 dockerd the frontend's probe saw 503, then 200"
	else
		fail "cold: after kill -9 dockerd the probe saw 503: $saw503; healthy again: no"
	fi
	# A clean shutdown through POST /shutdown (what `ddinit stop` sends).
	timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "cold: clean shutdown through POST /shutdown exits 0" [ $? -eq 0 ]
	;;
warm)
	grep '"kernelMount": true' /tmp/probe.json >/dev/null && kernel=yes || kernel=no
	hits=$(grep -c '"cacheHit": true' /tmp/probe.json)
	if [ "$kernel" = yes ] && [ "$hits" -ge 2 ]; then
		pass "warm: both images are cache hits mounted with the kernel's iso9660"
	else
		fail "warm: cache hits $hits, kernel iso9660 mount: $kernel"
	fi
	out=$(timeout 180 docker run --rm -v vmvol:/data busybox:local cat /data/f 2>&1)
	check "warm: the next boot finds the volume's data ($out)" [ "$out" = "persisted-across-boots" ]
	# A writer the host will cut off: each number is written, synced, and
	# only then reported as safe.
	timeout 180 docker run -d --name writer -v vmvol:/data busybox:local sh -c 'i=0; while :; do i=$((i+1)); echo $i > /data/n.$i; sync; echo synced $i; sleep 0.2; done' >/dev/null
	while :; do
		timeout 10 docker logs writer 2>/dev/null | tail -1 >/results/last-synced.tmp
		mv /results/last-synced.tmp /results/last-synced
		sleep 0.3
	done
	;;
after-crash)
	last=$(awk '{print $2}' /results/last-synced)
	out=$(timeout 180 docker run --rm -v vmvol:/data busybox:local sh -c "cat /data/n.$last" 2>&1)
	check "after-crash: data synced before the hard stop is there (n.$last: $out)" [ "$out" = "$last" ]
	# The engine on demand: with a short idleStop (a settings change) the
	# frontend finds the engine stopped, and wakes it with a docker call
	# over AF_VSOCK.
	echo '{"idleStop": "3s"}' | timeout 120 ddinit settings --control "$control" set - >/tmp/idle-set.log 2>&1 || fail "after-crash: idleStop not set: $(tail -1 /tmp/idle-set.log)"
	idle=no
	for i in $(seq 1 120); do
		if timeout 20 ddinit status --control "$control" 2>/dev/null | grep -q 'stopped (idle)' && ! pidof dockerd >/dev/null; then
			idle=yes
			break
		fi
		sleep 1
	done
	out=$(timeout 180 docker version --format '{{.Server.Version}}' 2>&1)
	woke=no
	pidof dockerd >/dev/null && woke=yes
	check_all "after-crash: with idleStop 3s the engine stopped (idle: $idle) and a docker call over AF_VSOCK woke it (server $out, dockerd running: $woke)" '[ "$idle" = yes ] && [ -n "$out" ] && [ "$woke" = yes ]'
	# Off again: the next boot's engine stops only when the idle phase
	# says (its stop must be the one that trims: at most one in 5 min).
	echo '{"idleStop": "0"}' | timeout 120 ddinit settings --control "$control" set - >/tmp/idle-set.log 2>&1 || fail "after-crash: idleStop not turned off: $(tail -1 /tmp/idle-set.log)"
	timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "after-crash: clean shutdown exits 0" [ $? -eq 0 ]
	;;
idle)
	# The pause freezes only the engine (cgroup v2, as WSL's is): a
	# process outside its cgroup, ddinit status and the next docker call
	# all keep working. The idleStop the last phase set is turned off.
	engine=/sys/fs/cgroup/ddinit
	set_settings() { echo "$1" | timeout 120 ddinit settings --control "$control" set - >/tmp/set.log 2>&1 || fail "idle: settings $1 not set: $(tail -1 /tmp/set.log)"; }
	cpu() { for p in $(pidof containerd dockerd); do awk '{printf "%s ", $14+$15}' /proc/$p/stat; done; }
	# Written aside and renamed: a read never finds the file just emptied.
	( while :; do date +%s >/tmp/tick.new && mv /tmp/tick.new /tmp/tick; sleep 0.2; done ) &
	ticker=$!
	set_settings '{"idleStop": "0", "idlePause": "2s"}'
	frozen=no
	for i in $(seq 1 120); do grep -q 'frozen 1' $engine/cgroup.events 2>/dev/null && { frozen=yes; break; }; sleep 0.5; done
	before=$(cpu) t0=$(cat /tmp/tick)
	sleep 10
	after=$(cpu) t1=$(cat /tmp/tick)
	timeout 10 ddinit status --control "$control" >/tmp/paused.txt 2>&1 && grep -q 'paused' /tmp/paused.txt && answered=yes || answered=no
	check_all "idle: paused: the engine's cgroup frozen ($frozen); containerd's and dockerd's CPU time unchanged over 10 s ($before→ $after); a process outside ticked ($t0 → $t1); ddinit status answered ($answered)" \
		'[ "$frozen" = yes ] && [ -n "$before" ] && [ "$before" = "$after" ] && [ "$t1" -ge $((t0 + 8)) ] && [ "$answered" = yes ]'
	kill $ticker
	# No more pauses: the load and the write below must not be paused and
	# reclaimed before the stop is measured.
	set_settings '{"idlePause": "0"}'
	# What the pause gave back (the log says within a moment); if it did
	# not, where ddinit's threads are in the kernel.
	for i in $(seq 1 30); do grep -q 'memory given back\|memory was not reclaimed' /results/ddinit-$phase.log && break; sleep 0.5; done
	if ! grep -q 'memory given back\|memory was not reclaimed' /results/ddinit-$phase.log; then
		echo "no give-back after the pause; ddinit's threads in the kernel:"
		for p in $(pidof ddinit); do for t in /proc/$p/task/*; do echo "== $t $(cat $t/comm) $(cat $t/wchan)"; cat $t/stack 2>/dev/null; done; done
		cat $engine/memory.stat | head -12
	fi
	out=$(timeout 60 docker ps --format '{{.Names}}' 2>&1) && woke=yes || woke=no
	check "idle: the next docker ps works ($woke)" [ "$woke" = yes ]
	# Memory back: a 200 MB image loaded, then the engine stops idle.
	timeout 240 docker load -i /mnt/host/c/big.tar >/tmp/load.log 2>&1 || fail "idle: docker load: $(tail -1 /tmp/load.log)"
	# Disk back: 500 MB written to a volume and removed.
	timeout 240 docker run --rm -v trimvol:/data busybox:local dd if=/dev/zero of=/data/blob bs=1M count=500 conv=fsync >/tmp/dd.log 2>&1 || fail "idle: the 500 MB write: $(tail -1 /tmp/dd.log)"
	sync
	ask_host du-written
	timeout 60 docker volume rm trimvol >/dev/null 2>&1
	file_before=$(awk '$1 == "file" {print $2}' $engine/memory.stat)
	set_settings '{"idleStop": "3s", "idlePause": "0"}'
	stopped=no
	for i in $(seq 1 120); do
		if ! pidof dockerd containerd >/dev/null && grep -q 'free blocks given back\|free blocks were not given back' /results/ddinit-$phase.log; then stopped=yes; break; fi
		sleep 1
	done
	file_after=$(awk '$1 == "file" {print $2}' $engine/memory.stat)
	check_all "idle: the engine stopped ($stopped) and the page cache its cgroups held fell by at least 80% (file ${file_before:-none} → ${file_after:-none} bytes)" \
		'[ "$stopped" = yes ] && [ -n "$file_before" ] && [ -n "$file_after" ] && [ $((file_after * 5)) -le "$file_before" ]'
	ask_host du-trimmed
	timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "idle: clean shutdown exits 0" [ $? -eq 0 ]
	;;
packs)
	# A switch to the second pack at the next boot (a stop and a boot in
	# this guest, the kernel's iso9660), and back live; no loop device left
	# bound to an image no longer mounted.
	res="/mnt/host/c/Program Files/Docker/Docker/resources"
	set_settings() { echo "$1" | timeout 120 ddinit settings --control "$control" set - >/tmp/set.log 2>&1 || fail "packs: settings $1 not set: $(tail -1 /tmp/set.log)"; }
	set_settings '{"idleStop": "0", "idlePause": "0"}'
	timeout 120 docker run -d --name keeper --restart always -v vmvol:/data busybox:local sleep 3600 >/dev/null 2>&1
	loops() { # the backing files of bound loop devices, one per line
		for f in /sys/block/loop*/loop/backing_file; do [ -f "$f" ] && cat "$f"; done
	}
	switch_to() { # NAME PATH: use it, stop, boot again
		if ! timeout 300 ddinit pack use --control "$control" "$2" >/tmp/use.log 2>&1; then
			fail "packs: ddinit pack use $1: $(tail -1 /tmp/use.log)"
			return 1
		fi
		timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
		wait $ddinit_pid
		boot_ddinit
		healthy 400 || { fail "packs: not healthy after the switch to $1: $(tail -1 /tmp/probe.err)"; return 1; }
		for i in $(seq 1 100); do timeout 10 docker version >/dev/null 2>&1 && break; sleep 0.2; done
	}
	on_pack() { # NAME WANT-LABEL
		want=$2
		labels=$(timeout 60 docker info --format '{{json .Labels}}' 2>&1)
		case "$labels" in *pack=2*) has=yes ;; *) has=no ;; esac
		running=no
		for i in $(seq 1 60); do [ "$(timeout 20 docker inspect -f '{{.State.Running}}' keeper 2>/dev/null)" = true ] && { running=yes; break; }; sleep 1; done
		data=$(timeout 120 docker run --rm -v vmvol:/data busybox:local cat /data/f 2>&1)
		bound=$(loops)
		n=$(echo "$bound" | grep -c . || true)
		check_all "packs: on $1: labels $labels; the restart-policy container back ($running); the volume's data ($data); $n loop devices bound, each to a file still there" \
			'[ "$has" = "$want" ] && [ "$running" = yes ] && [ "$data" = persisted-across-boots ] && [ "$n" -le 2 ] && ! echo "$bound" | grep -q deleted'
	}
	# live_to NAME PATH: switched live, without a reboot, over vsock, while
	# the frontend's stand-in polls /ping over vsock: never refused.
	live_to() {
		rm -f /tmp/poll.stop /tmp/poll.refused
		: >/tmp/poll.count
		(
			while [ ! -e /tmp/poll.stop ]; do
				timeout 10 ddinit probe --timeout 5s "$control" >/dev/null 2>/tmp/poll.err
				grep -qiE "refused|not running|no such" /tmp/poll.err && cat /tmp/poll.err >>/tmp/poll.refused
				echo asked >>/tmp/poll.count
				sleep 0.2
			done
		) &
		poller=$!
		timeout 300 ddinit pack use --live --control "$control" "$2" >/tmp/live.log 2>&1
		rc=$?
		touch /tmp/poll.stop
		wait $poller
		asked=$(grep -c . /tmp/poll.count || true)
		check_all "packs: live switch to $1 over vsock ($(tail -1 /tmp/live.log)); /ping asked $asked times meanwhile, never refused $(head -1 /tmp/poll.refused 2>/dev/null)" \
			'[ "$rc" -eq 0 ] && [ ! -s /tmp/poll.refused ] && [ "$asked" -gt 0 ]'
	}
	switch_to pack2 "$res/pack2.iso" && on_pack pack2 yes
	live_to docker.iso "$res/docker.iso" && on_pack "docker.iso (live)" no
	timeout 60 docker rm -f keeper >/dev/null 2>&1
	timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "packs: clean shutdown exits 0" [ $? -eq 0 ]
	;;
kubernetes)
	# The cluster (cgroup v2, as WSL's), switched on as the frontend does
	# (PUT /settings over vsock); kubectl from the CLI tools offer on the
	# admin kubeconfig offered in the shared tmpfs, as in a distro; a pod
	# from an image docker imported here, with no registry.
	export HOME=/root
	data=/mnt/wsl/docker-desktop-data/data
	kubectl=/mnt/wsl/docker-desktop/cli-tools/current/bin/kubectl
	kubeconfig=/mnt/wsl/docker-desktop/kubernetes/config
	k() { timeout 60 "$kubectl" --kubeconfig "$kubeconfig" --request-timeout=30s "$@"; }
	# The phase's budget (the host's VM_KUBE_TIMEOUT), less what the boot
	# took and a margin to stop and power off.
	budget=$(sed -n 's/.*vmtest.timeout=\([0-9]*\).*/\1/p' /proc/cmdline)
	deadline=$(( $(date +%s) + ${budget:-900} - $(cut -d. -f1 /proc/uptime) - 100 ))
	kstatus() { timeout 20 ddinit status --json --control "$control" 2>/dev/null | tr -d '\n' | tr -s ' ' | sed -n 's/.*"kubernetes": *\({[^}]*}\).*/\1/p'; }
	keep_logs() {
		mkdir -p /results/kubernetes-logs
		cp "$data"/log/*.log /results/kubernetes-logs/ 2>/dev/null
		lsmod >/results/kubernetes-logs/lsmod.txt 2>&1
	}
	on_at=$(date +%s)
	out=$(echo '{"idleStop": "0", "idlePause": "0", "kubernetes": true}' | timeout 400 ddinit settings --control "$control" set - 2>&1)
	rc=$?
	st=$(kstatus)
	has() { case "$1" in *"$2"*) return 0 ;; esac; return 1; }
	check_all "kubernetes: switched on over vsock (PUT /settings) in $(( $(date +%s) - on_at ))s: $st" '[ "$rc" -eq 0 ] && has "$st" "\"on\": true"'
	[ "$rc" -eq 0 ] || echo "settings: $out"
	# Node Ready, as a distro's kubectl sees it; a line every minute.
	ready=no next_note=$(( $(date +%s) + 60 ))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		if [ -x "$kubectl" ] && [ -f "$kubeconfig" ] && k get nodes --no-headers 2>/tmp/nodes.err >/tmp/nodes.txt && grep -q ' Ready ' /tmp/nodes.txt; then
			ready=yes
			break
		fi
		if [ "$(date +%s)" -ge "$next_note" ]; then
			echo "waiting for the node after $(( $(date +%s) - on_at ))s: $(kstatus) $(tail -1 /tmp/nodes.err 2>/dev/null) $(cat /tmp/nodes.txt 2>/dev/null)"
			next_note=$(( next_note + 60 ))
		fi
		sleep 5
	done
	ready_after=$(( $(date +%s) - on_at ))
	check_all "kubernetes: node Ready ${ready_after}s after the switch, by the offered kubectl and kubeconfig ($(tr -s ' ' </tmp/nodes.txt 2>/dev/null | head -1))" '[ "$ready" = yes ]'
	# /status: running, the node Ready, the seven components ready (a
	# component's readiness probe may lag the node on the emulated CPU:
	# asked again for up to two minutes).
	for i in $(seq 1 24); do
		st=$(kstatus)
		timeout 20 ddinit status --control "$control" >/tmp/kstatus.txt 2>&1
		comps=0
		for s in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns; do
			awk -v s=$s '$1 == s && $3 == "true" { found = 1 } END { exit !found }' /tmp/kstatus.txt && comps=$((comps + 1))
		done
		if has "$st" "\"state\": \"running\"" && has "$st" "\"nodeReady\": true" && [ "$comps" -eq 7 ]; then
			break
		fi
		sleep 5
	done
	check_all "kubernetes: /status: $st; $comps of the 7 components ready" \
		'has "$st" "\"state\": \"running\"" && has "$st" "\"nodeReady\": true" && [ "$comps" -eq 7 ]'
	# A pod from an image docker imported while the cluster runs (given
	# to the CRI by ddinit), never pulled.
	if [ "$ready" = yes ]; then
		mkdir -p /tmp/img/bin
		cp /bin/busybox /tmp/img/bin/busybox
		for a in sh echo cat ls sleep mkdir httpd; do ln -sf busybox /tmp/img/bin/$a; done
		tar -C /tmp/img -cf /tmp/hello.tar .
		pod_at=$(date +%s)
		timeout 120 docker import /tmp/hello.tar vmtest/hello:1 >/dev/null 2>&1 || fail "kubernetes: docker import of vmtest/hello:1"
		for i in $(seq 1 120); do grep 'image given to the cluster' /results/ddinit-$phase.log | grep -q 'vmtest/hello:1' && break; sleep 1; done
		cat >/tmp/hello.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: hello, labels: {app: hello}}
spec:
  restartPolicy: Never
  containers:
  - name: hello
    image: vmtest/hello:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from a pod, cgroup $(cat /proc/self/cgroup); mkdir /www; echo served by a pod > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: [{containerPort: 80}]
EOF
		# The default ServiceAccount comes a moment after the node.
		for i in $(seq 1 30); do k apply -f /tmp/hello.yaml >/tmp/apply.log 2>&1 && break; sleep 3; done
		running=no
		while [ "$(date +%s)" -lt "$deadline" ]; do
			[ "$(k get pod hello -o 'jsonpath={.status.phase}' 2>/dev/null)" = Running ] && k logs hello 2>/dev/null | grep -q 'hello from a pod' && { running=yes; break; }
			sleep 3
		done
		line=$(k logs hello 2>&1 | head -1)
		check_all "kubernetes: a pod from vmtest/hello:1 (docker import, imagePullPolicy Never) Running after $(( $(date +%s) - pod_at ))s, its line: $line" '[ "$running" = yes ]'
		if [ "$running" != yes ]; then
			tail -3 /tmp/apply.log
			k describe pod hello 2>&1 | tail -25
		fi
		# A LoadBalancer Service on the distro's localhost: ddinit run's
		# port, kube-proxy's NodePort (iptables through nft), the pods'
		# bridge.
		svc_at=$(date +%s)
		k expose pod hello --type=LoadBalancer --port=18080 --target-port=80 >/tmp/expose.log 2>&1
		served=
		while [ "$running" = yes ] && [ "$(date +%s)" -lt "$deadline" ]; do
			served=$(timeout 10 wget -qO- http://127.0.0.1:18080/ 2>/dev/null) && [ "$served" = "served by a pod" ] && break
			served=
			sleep 2
		done
		check_all "kubernetes: a LoadBalancer Service answers on the distro's 127.0.0.1:18080 after $(( $(date +%s) - svc_at ))s ($served)" '[ "$served" = "served by a pod" ]'
		if [ -z "$served" ]; then
			cat /tmp/expose.log
			k get svc hello -o wide 2>&1
		fi
	else
		fail "kubernetes: no pod: the node never became Ready"
		fail "kubernetes: no Service: the node never became Ready"
	fi
	if grep -q '^FAIL kubernetes' "$report"; then
		cat /tmp/kstatus.txt
		grep -E '"level":"(warning|error|fatal)"' /results/ddinit-$phase.log | tail -15
		k get pods -A -o wide 2>&1 | head -20
		k get events -A 2>&1 | tail -20
		free -m
	fi
	keep_logs
	timeout 180 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "kubernetes: clean shutdown with the cluster on exits 0" [ $? -eq 0 ]
	;;
esac

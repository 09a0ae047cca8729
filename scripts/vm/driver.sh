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
elapsed() { echo $(( $(date +%s) - start )); }

start=$(date +%s)
ddinit run --config /etc/ddinit/config.json --vsock-allow-local --log-level debug >/results/ddinit-$phase.log 2>&1 &
ddinit_pid=$!

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
	for a in sh echo cat ls sleep sync mkdir; do ln -s busybox /tmp/img/bin/$a; done
	tar -C /tmp/img -cf /tmp/img.tar .
	timeout 120 docker import /tmp/img.tar busybox:local >/dev/null
fi

case "$phase" in
cold)
	pass "cold: boot phases printed: ${phases#boot: }"
	timeout 120 vsock.test -test.run 'TestRealVsockLoopback|TestPeerFilter' -test.v >/results/vsock-test.log 2>&1
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
	check "cold: docker exec reads what docker cp put in the container, not the distro's files ($got)" [ "$got" = "copied in" ] && [ -z "$leak" ]
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
	check "after-crash: with idleStop 3s the engine stopped (idle: $idle) and a docker call over AF_VSOCK woke it (server $out, dockerd running: $woke)" [ "$idle" = yes ] && [ -n "$out" ] && [ "$woke" = yes ]
	timeout 120 ddinit stop --control "$control" >/tmp/stop.log 2>&1
	wait $ddinit_pid
	check "after-crash: clean shutdown exits 0" [ $? -eq 0 ]
	;;
esac

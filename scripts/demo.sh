#!/usr/bin/env bash
# The main job in one command: boot ddinit from the two images with a
# throwaway data store, import a tiny image (no registry is reachable),
# run a container through the exposed docker socket, print its output and
# leave everything running for you to try.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d /tmp/ddinit-demo-data.XXXXXX)
run=$(mktemp -d /tmp/ddinit-demo-run.XXXXXX)
sock=$run/docker.sock
export DOCKER_HOST=unix://$sock DOCKER_CLI_HINTS=false

echo "== booting ddinit (data store $data, logs in $data/log/)"
setsid bin/ddinit run \
	--base-image build/docker-desktop.iso --version-pack build/docker.iso \
	--data-dir "$data" --run-dir "$run" \
	--expose "docker=unix://$sock" </dev/null >"$run/ddinit.out" 2>&1 &
pid=$!
echo "$pid" >"$run/ddinit.pid"
start=$(date +%s%N)
until docker version >/dev/null 2>&1; do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "ddinit exited:" >&2
		tail -5 "$run/ddinit.out" >&2
		exit 1
	fi
	if [ $(( ($(date +%s%N) - start) / 1000000000 )) -gt 60 ]; then
		echo "docker did not answer within 60s; see $run/ddinit.out" >&2
		exit 1
	fi
	sleep 0.05
done
echo "== docker answers through $sock after $(( ($(date +%s%N) - start) / 1000000 )) ms"
docker version --format 'engine {{.Server.Version}}, containerd {{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}}'

echo "== importing a busybox image"
img=$(mktemp -d)
mkdir -p "$img/bin"
cp "$(readlink -f "$(command -v busybox)")" "$img/bin/busybox"
for a in sh echo cat uname hostname; do ln -s busybox "$img/bin/$a"; done
tar -C "$img" -cf "$img.tar" .
docker import "$img.tar" busybox:local >/dev/null
rm -rf "$img" "$img.tar"

echo "== running a container"
docker run --rm -v demo:/data busybox:local sh -c 'echo "hello from a container, kernel $(uname -r), host $(hostname)" | tee /data/greeting'

echo
echo "== ddinit status"
bin/ddinit status --control "unix://$run/control.sock"

cat <<TXT

ddinit is still running (pid $pid). Try it:
  export DOCKER_HOST=unix://$sock
  docker run --rm -v demo:/data busybox:local cat /data/greeting
  bin/ddinit status --control unix://$run/control.sock
  bin/ddinit logs -f --control unix://$run/control.sock dockerd
  tail -f $data/log/ddinit.log
Stop it (a clean shutdown) and clean up with:
  kill -TERM $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done; rm -rf $data $run
TXT

# ddinit: see README.md. `make demo` sets everything up and runs the main
# job; `make test` runs the tests.
SHELL := /bin/bash
GO ?= go
# Each target's budget is a count of runs (up to about ten seconds here),
# not a duration: Go 1.26's fuzzing coordinator can fail a duration-bounded
# run with a spurious "context deadline exceeded" (golang/go#75804, fixed
# in 1.27). FUZZTIME=1m (or 1000000x) gives every target the same budget.
# The ISO 9660 record parsers get 100000 runs (~2 s): 300000 (~5 s) found
# at most one new input in CI's last runs; the kept corpus (testdata/fuzz)
# is replayed by every go test.
FUZZTIME ?=
FUZZ_TARGETS := iso9660:FuzzVolumeDescriptor:100000x iso9660:FuzzDirectoryRecord:100000x \
	iso9660:FuzzSUSP:100000x iso9660:FuzzImage:60000x \
	dockerproxy:FuzzProxyRequest:20000x dockerproxy:FuzzRewriteCreate:100000x \
	settings:FuzzParse:100000x settings:FuzzLoadStored:5000x \
	dnsforward:FuzzParseConf:100000x dnsforward:FuzzAnswer:50000x \
	clitools:FuzzReadStates:20000x kubeconfig:FuzzMerge:40000x \
	services:FuzzParseSchedstat:100000x

.PHONY: all deps build isos kube test-packs distro test test-builds unit fuzz bench bench-compare demo vm-test clean

all: build

deps:
	bash scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o bin/ddinit ./cmd/ddinit

# The bootstrap distro's root filesystem tarball (what wsl --import takes).
distro: build
	bash scripts/mkdistro.sh

# Every image mkisos.sh writes, each with its .sha256 sidecar: the base
# distro, both version packs, the CLI tools (with kubectl) and Kubernetes.
# The engine, the clients and Kubernetes are built from pinned sources and
# cached outside the checkout (a cold Kubernetes build takes ~12-15
# minutes; mkisos.sh waits for one already running, as CI starts it early).
# The version packs the tests switch to come with the images (see
# test-packs below).
ISOS := $(addprefix build/,docker-desktop.iso docker.iso docker-20.10.iso cli-tools.iso kubernetes.iso)
TEST_PACKS := $(addprefix build/test-packs/,pack2.iso broken.iso newer.iso dies-loading.iso)
isos: $(ISOS) $(TEST_PACKS)

$(ISOS) &: scripts/mkisos.sh scripts/iso.sh scripts/oci-image.sh scripts/modbuild.sh scripts/build-engine.sh scripts/build-clients.sh scripts/build-kube.sh packs/versions.env $(shell find distro packs/kube -type f)
	bash scripts/mkisos.sh

# Kubernetes from its pinned sources (packs/versions.env, packs/kube): one
# program for the cluster's daemons, kubectl and the pause program, cached
# by version outside the checkout (docs/kubernetes.md); make isos puts
# them in build/kubernetes.iso and kubectl in build/cli-tools.iso.
kube:
	bash scripts/build-kube.sh

# The version packs the tests switch to (build/test-packs/: a second pack
# labelled pack=2, a broken one, one claiming a newer engine), made from
# build/docker.iso.
test-packs: $(TEST_PACKS)

$(TEST_PACKS) &: build/docker-desktop.iso scripts/mktestpacks.sh scripts/iso.sh scripts/testpacks/dockerd-dies-loading
	bash scripts/mktestpacks.sh

# The tests that need root (mounts, namespaces, the real engine) run only
# when asked: as root, with DDINIT_TEST_ROOT=1 (make unit leaves them out).
test test-builds bench bench-compare: export DDINIT_TEST_ROOT := 1

test: build isos test-packs distro
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) test -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/e2e$$')
	$(GO) test -count=1 -timeout 30m -skip '^($(RACE_E2E))$$' ./e2e/
	$(GO) test -race -count=1 $(RACE_UNITS)
	$(MAKE) test-builds
	$(MAKE) fuzz

# The packages whose state is shared between goroutines, under the race
# detector (unit tests, no root needed).
RACE_UNITS := ./clitools/ ./kubeconfig/ ./settings/ ./control/ ./services/ ./dockerproxy/ ./distroproxy/ ./fairshare/ ./engineclient/ ./transport/ ./dnsforward/

# ddinit boots the same however it is built: a plain `go build` (cgo,
# dynamically linked) through five boots, a PIE through one, and the race
# detector — which also runs the e2e tests whose goroutines meet in ddinit:
# the supervisor's, the settings', the docker API and distro proxies' and
# their binds', names, the engine on demand and version packs. Those run
# only there (make test's plain e2e run skips them, which keeps a warm CI
# run under 30 minutes); the static build runs BOOT_TESTS, every other e2e
# test and the VM. Left out of the race run, run by the plain suite: the
# corporate proxy's (registry pushes and builds; its settings and rewrites
# are raced by TestSettings and TestDockerAPIProxy) and the binds'
# mount-table count (its binds are raced by TestDistroProxy and
# TestBindsComeBackAfterWSLRestarts).
BOOT_TESTS := TestBootRunStopBootAgain|TestRepeatedBootsStayUp
RACE_E2E := TestHungServicesAreKilledAndRestarted|TestSupervisionRestartsAndBacksOff|TestSettings|TestTruncatedSettingsDocument|TestUnusableDaemonJSONAtBoot|TestKillDuringSettingsChange|TestDockerAPIProxy|TestDistroProxy|TestBindsComeBackAfterWSLRestarts|TestNamesResolveAsTheDistroDoes|TestEngineStopsWhenIdleAndWakes|TestBrokenVersionPackRollsBack|TestLiveVersionPackSwitch|TestLiveSwitchToBrokenPackRollsBack
test-builds: isos test-packs
	$(GO) build -o bin/ddinit-dynamic ./cmd/ddinit
	DDINIT_BINARY=$(CURDIR)/bin/ddinit-dynamic DDINIT_BOOT_LOOP=5 $(GO) test -count=1 -timeout 20m -run '^($(BOOT_TESTS))$$' ./e2e/
	$(GO) build -buildmode=pie -o bin/ddinit-pie ./cmd/ddinit
	DDINIT_BINARY=$(CURDIR)/bin/ddinit-pie DDINIT_BOOT_LOOP=1 $(GO) test -count=1 -timeout 20m -run '^($(BOOT_TESTS))$$' ./e2e/
	$(GO) build -race -o bin/ddinit-race ./cmd/ddinit
	DDINIT_BINARY=$(CURDIR)/bin/ddinit-race DDINIT_BOOT_LOOP=1 $(GO) test -count=1 -timeout 20m -run '^($(BOOT_TESTS)|$(RACE_E2E))$$' ./e2e/

# Every package's unit tests, no root and no images needed (the tests
# that need them skip, saying so).
unit:
	$(GO) vet ./...
	$(GO) test -count=1 -short ./...

fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  IFS=: read -r pkg f budget <<< "$$t"; budget=$${FUZZTIME:-$$budget}; \
	  echo "fuzz $$f ($$pkg) for $$budget"; \
	  $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $$budget -fuzzminimizetime 100x ./$$pkg/ || exit 1; \
	done

# The benchmarks (package bench; rootfs's own needs its internals): each
# figure beside a baseline measured in the same run, as a ratio.
# The cgroup layout the bench runs on (scripts/cgroup-view.sh): v2 alone,
# as WSL 2 mounts it, by default; CGROUPS=machine for this machine's own.
# The cluster's figures are on the machine's layout: kubelet wants the cpu
# and memory controllers, which a hybrid machine binds to v1.
CGROUPS ?= v2
bench: build isos
	DDINIT_BENCH=1 bash scripts/cgroup-view.sh $(CGROUPS) $(GO) test -count=1 -timeout 30m -run '^TestBench' -skip '^TestBenchKubernetes$$' -v ./rootfs/ ./hostports/ ./bench/ | grep -E 'BENCH|^(ok|FAIL|---)'
	DDINIT_BENCH=1 $(GO) test -count=1 -timeout 30m -run '^TestBenchKubernetes$$' -v ./bench/ | grep -E 'BENCH|^(ok|FAIL|---)'

# This tree's bin/ddinit against BASELINE's (by default the commit before
# the reshaping into launcher/ and pid1/), built by BASELINE's own make
# build in a git worktree under build/ that is removed afterwards: boots
# (cold and warm), a wake after an idle stop and _ping round trips, in
# ROUNDS rounds alternating which goes first, both on the same images.
BASELINE ?= 86417b4
ROUNDS ?= 10
bench-compare: build isos
	@set -eo pipefail; \
	  rev=$$(git rev-parse --verify '$(BASELINE)^{commit}'); \
	  tmp=$$(mktemp -d $(CURDIR)/build/bench-baseline.XXXXXX); \
	  trap 'git worktree remove --force "$$tmp/src" 2>/dev/null; rm -rf "$$tmp"; git worktree prune' EXIT; \
	  git worktree add --quiet --detach "$$tmp/src" "$$rev"; \
	  echo "building $(BASELINE) ($$rev) in $$tmp/src"; \
	  $(MAKE) --no-print-directory -C "$$tmp/src" build GO=$(GO) >/dev/null; \
	  new="$$(git log -1 --format='%h %s' HEAD)$$(git diff --quiet HEAD -- . ':!*_test.go' || echo ' + uncommitted changes')"; \
	  DDINIT_BENCH=1 DDINIT_BENCH_ROUNDS=$(ROUNDS) DDINIT_BASELINE_BINARY="$$tmp/src/bin/ddinit" \
	    DDINIT_BASELINE_DESC="$$(git log -1 --format='%h %s' $$rev)" DDINIT_NEW_DESC="$$new" \
	    $(GO) test -count=1 -timeout 90m -run '^TestCompareBaseline$$' -v ./bench/ | grep -E 'BENCH|^(ok|FAIL|---)'

# The WSL-like VM: qemu (TCG), Debian's kernel, virtio-9p, vsock loopback
# (make deps installs what it needs).
vm-test: build isos test-packs
	bash scripts/vm-test.sh

demo: deps build isos
	bash scripts/demo.sh

clean:
	rm -rf bin build

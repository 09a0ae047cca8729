// Package e2e holds the end-to-end tests: the real bin/ddinit booting the
// real images (make build isos) with the real containerd, runc and
// dockerd, driven through the exposed docker socket, as root. They start
// and talk to ddinit through package harness (e2e/harness), which the
// benchmarks (package bench) share; what only one test needs stays in
// its file. The tests assert behaviour, never speed (package bench
// measures it).
package e2e

// Package e2e holds the end-to-end tests: the real bin/ddinit booting the
// real images (make build isos) with the real containerd, runc and
// dockerd, driven through the exposed docker socket, as root.
package e2e

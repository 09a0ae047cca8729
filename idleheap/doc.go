// Package idleheap hands the Go heap a process no longer needs back to
// the kernel: once after the boot has settled (both of ddinit's processes
// then idle for hours), and whenever a burst of work (a docker cp through
// the proxy, a diagnostics archive) left enough free heap that Go's own
// scavenger would keep for minutes.
//
// It must not know what the process does: its owner says when to settle
// and until when to watch.
package idleheap

// Package cli holds ddinit's subcommands: argument parsing, calls into the
// packages that do the work, and human-readable output.
//
// It must not hold logic a daemon path needs: anything `ddinit run` also
// does lives in rootfs, services, mounts or vsock and is only called here.
// Errors reach the user as one line naming the cause, never a stack trace.
package cli

// Package cli holds ddinit's subcommands: argument parsing, calls into the
// packages that do the work, and human-readable output.
//
// One parser serves every command (cli.go): a command defines its flags
// and what it does; flags may come anywhere among its arguments (and
// around a group's subcommand), -h/--help prints its usage on stdout, a
// mistake is a line and the usage on stderr with exit status 2. PID 1's
// entry (`ddinit init`) is not a command for people: it bypasses all this.
//
// It must not hold logic a daemon path needs: anything `ddinit run` also
// does lives in launcher, rootfs, services, mounts or transport and is only
// called here.
// Errors reach the user as one line naming the cause, never a stack trace.
package cli

// Package wire is every message between ddinit's two processes: the
// Handoff `ddinit run` gives each PID 1 it starts (its fd 3: the config of
// this boot and what ddinit run decided for it), and the Messages both
// send on the one socket between them (fd 4, a SOCK_SEQPACKET pair:
// messages keep their bounds, and a drive's mount tree travels with its
// message as a descriptor). A Message has one Kind and the one payload
// that kind carries; errors cross with their errdefs kind (Error); a
// request and its reply are matched by ID (Calls).
//
// It owns the types, their encoding and the socket. It must not decide
// what either process does with a message: the launcher and pid1 packages
// do.
package wire

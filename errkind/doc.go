// Package errkind is the one error kind ddinit adds to containerd's
// vocabulary (github.com/containerd/errdefs: not found, invalid argument,
// conflict, unavailable, failed precondition …): a change that was refused
// and rolled back, so that nothing of it is in force.
//
// Errors carry their kind by wrapping one of these values; callers ask
// with errors.Is or the errdefs Is* functions, never by matching text.
// It must not map kinds to anything (HTTP status codes are package
// control's) nor import any other package of ddinit.
package errkind

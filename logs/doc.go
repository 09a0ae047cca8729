// Package logs is ddinit's log plumbing: logrus set up to write JSON lines
// to size-rotated files and text to a terminal, per-service ring buffers of
// recent output, and a writer that turns a service's output stream into
// log lines carrying its component, and a hook that keeps a process's own
// log lines in a ring.
//
// It must not decide what is logged or when: callers own their messages.
// Everything here is safe for concurrent use.
package logs

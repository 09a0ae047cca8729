// Package atomicfile is the one way ddinit replaces a file: written to a
// temporary file in the same folder, synced, renamed over the old one,
// the folder synced, so that a crash or a full disk leaves the old
// content or the new, never half of one.
//
// It must not decide what is written or where, and imports nothing of
// ddinit's.
package atomicfile

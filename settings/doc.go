// Package settings owns the settings the Windows frontend pushes to
// ddinit and the daemon.json dockerd reads: the document's fields, its
// validation (before anything changes: a proxy URL, a PEM certificate),
// its generations (a writer that
// read a stale one is refused), its persistence in the data store
// (written atomically, with a copy of the last good document), and the
// Applier: one owner, with its own lock, that loads them at boot (a file
// it cannot use is kept aside and the last good one used, never a failed
// boot), applies a change at a time and rolls back what dockerd refuses,
// live or at boot.
//
// It must not know the supervisor: it reaches the engine only through the
// Engine interface (restart dockerd, switch a setting's services, set
// dockerd's environment: the proxy and trusted CAs), and the data store
// only through the paths PID 1 gives it, read with package regularfile (a
// FIFO, a folder, a file too large is unusable like one that does not
// parse, and kept aside the same way). Its errors carry their kind
// (errdefs, settings.ErrRolledBack); it maps none to HTTP.
package settings

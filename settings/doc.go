// Package settings owns the settings document the Windows frontend pushes
// to ddinit: its fields, its validation (before anything changes), its
// generations (a writer that read a stale one is refused) and its
// persistence in the data store, written atomically so that a crash
// leaves the old document or the new one, never half of one.
//
// It must not apply anything: PID 1 decides what a change restarts, and
// rolls back a change the engine refuses.
package settings

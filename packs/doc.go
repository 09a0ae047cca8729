// Package packs owns the choice of version pack (the engine's image) kept
// in the data store: which pack the next boot uses and which one came
// before it (to roll back to), whether the chosen one has yet to prove
// itself, and the record of which pack and engine version last ran on the
// data store. It inspects a pack before it is chosen: a dockerd service
// definition, the manifest's engine version, and whether that version is
// older than one the data store ran (version.go: how a dockerd version is
// read and compared; one that cannot be read fails the check, never passes
// it as "not older").
//
// It must not boot, stop or verify anything itself: the launcher verifies
// and caches an image (rootfs), boots it and rolls it back; this package
// only reads images and reads and writes its two files.
package packs

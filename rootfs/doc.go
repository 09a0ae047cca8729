// Package rootfs turns the two ISO images ddinit boots from (the base
// distro and the engine version pack) into a root filesystem.
//
// It owns: sha256 verification (a digest given, or the image's sidecar),
// the content-addressed image cache in the data store, the kernel fast
// path (loop-mounting an image when the kernel has iso9660), extraction
// through package iso9660 otherwise, and the overlay assembly that yields
// one directory ready to pivot into.
//
// It must not start processes, touch namespaces or know about services: it
// prepares a directory and nothing else. Every image, sidecar and cache
// record is opened with package regularfile: a regular file only (a FIFO
// is an error, never waited on), records bounded in size, and each read
// of an image from its source bounded in time (a hung 9p drive fails the
// boot with a reason rather than hang it).
package rootfs

// Package rootfs turns the two ISO images ddinit boots from (the base distro
// and the engine version pack) into a root filesystem.
//
// It owns: a faithful ISO 9660 reader (primary and Joliet descriptors, SUSP
// and Rock Ridge, including multi-extent files and deep-directory
// relocation), an extractor that never writes outside its target, sha256
// verification, the content-addressed image cache in the data store, the
// kernel fast path (loop-mounting an image when the kernel has iso9660) and
// the overlay assembly that yields one directory ready to pivot into.
//
// It must not start processes, touch namespaces or know about services: it
// prepares a directory and nothing else. Every parser treats the image as
// hostile: malformed input is an error naming what is wrong, never a panic,
// an unbounded allocation or a loop. Every image, sidecar and cache record
// is opened with package regularfile: a regular file only (a FIFO is an
// error, never waited on), records bounded in size, and each read of an
// image from its source bounded in time (a hung 9p drive fails the boot
// with a reason rather than hang it).
package rootfs

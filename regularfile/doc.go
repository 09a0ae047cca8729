// Package regularfile is how ddinit reads a file it does not control: a
// distro's resolver file, the data store's settings, daemon.json and
// records, the images and their digest sidecars on a Windows drive, its
// own config. Such a path may name anything: a FIFO (whose plain open
// waits for a writer for ever), a socket, a device, a directory, a
// symlink loop, a file too large to hold, or a file on a hung file system
// (9p to a Windows that stopped answering).
//
// It owns: opening without blocking (O_NONBLOCK, then the file's kind
// checked on the descriptor itself, so nothing is swapped in between),
// refusing all but regular files with an error naming what the path is,
// bounding what is read, and bounding how long an open or a read may
// take (a small file's whole read; each read of a large one streamed,
// ReaderWithin). An operation that outlives its bound is left to finish in the
// background (a goroutine blocked in the kernel cannot be stopped) and
// its descriptor closed when it does; the caller has its error at once.
//
// It must not decide what a file means, retry, or write anything.
package regularfile

// Package iso9660 reads ISO 9660 images faithfully, as the kernel's
// iso9660 driver shows them: primary and Joliet descriptors, SUSP and
// Rock Ridge (modes, owners, device numbers, symlinks of any length, names
// of any length, hard links, deep-directory relocation, multi-extent
// files), and extracts an image's tree into a directory without ever
// writing outside it. The Go libraries that exist drop symlinks, devices,
// setuid bits or dotfiles' dots, or panic on relocated directories: this
// one is written here.
//
// Every image is hostile: malformed input is an error naming what is
// wrong, never a panic, an unbounded allocation or a loop. An image is
// opened with package regularfile (a regular file only, within
// ImageTimeout).
//
// It must not cache, verify digests, mount or know what an image is for:
// package rootfs does that with it.
package iso9660

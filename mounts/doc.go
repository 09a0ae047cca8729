// Package mounts owns ddinit's mount plans outside the root filesystem
// itself: the data store (the docker-desktop-data distro's root: its
// checks, its layout, and a layout folder that is not one: set aside when
// it holds only configuration, a clear error otherwise), the Windows
// drives, the one table of binds from
// the distro into the namespace (Plan: after the root switch, the only
// places where the namespace reaches the distro's file systems), and with
// them how they are taken down again; and the binds of a tree into a
// folder other distros can write (tree.go: each mount cloned alone and
// private, every path opened beneath its parent without following a
// symlink, unmounts made only on a mount root so opened), which a
// distro's proxy makes in the shared tmpfs.
//
// It must not pivot or create namespaces (packages pid1 and launcher do), never
// unmounts anything it did not mount, and never moves what may hold the
// engine's data (var/lib).
package mounts

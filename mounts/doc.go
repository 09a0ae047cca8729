// Package mounts owns ddinit's mount plans outside the root filesystem
// itself: the data store (the docker-desktop-data distro's root: its
// checks, its layout), the Windows drives, and the one table of binds from
// the distro into the namespace (DistroBinds: after the root switch, the
// only places where the namespace reaches the distro's file systems), and
// with them how they are taken down again.
//
// It must not pivot or create namespaces (package init does) and never
// unmounts anything it did not mount.
package mounts

// Package clitools owns the docker CLI tools every distro is offered: the
// docker CLI, its compose and buildx plugins, the CLI's completions and
// kubectl (in images from the one that first carried it on), from an
// image of their own, apart from the engine's version pack (they
// negotiate the API down: an engine rollback never downgrades a user's
// CLI).
//
// On ddinit run's side (Publish, Withdraw) it offers the image's tree,
// extracted in the data store, read-only in the tmpfs every distro shares:
// <shared>/docker-desktop/cli-tools/<id> is a read-only bind of the tree
// and "current" a link to the id, switched by one rename, so a distro
// running docker during a change never sees a missing or half-written
// file. On a distro's side (Linker, run by `ddinit proxy`) it makes the
// tools usable there: docker and kubectl on the default PATH, the
// plugins where the CLI looks for them, the completions where the distro
// has a folder for them, each a link into the shared copy, and writes
// what it did to a file of its own distro's in the shared tmpfs, which
// `ddinit status` reads (ReadStates).
//
// It must never overwrite, shadow or remove what it did not make: a
// docker, a kubectl or a plugin of the user's anywhere it would be found
// keeps ddinit's link away (and one made before it came is removed), and
// only a link that points into the shared copy is ever removed. It mounts only at its
// versioned folders, and every path it writes in the shared tmpfs is
// opened beneath it without following a symlink (package mounts).
package clitools

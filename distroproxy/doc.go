// Package distroproxy is the distro's side of the docker API proxy, what
// `ddinit proxy --distro NAME` runs in each integrated WSL distro: it
// makes the distro's paths that containers bind visible to the engine by
// bind-mounting them into the tmpfs every distro shares
// (<wsl-shared>/docker-desktop-bind-mounts/<distro>/<id>, which ddinit
// binds read-only at /run/desktop/bind-mounts inside), keeps each bind
// while a container uses it, makes them again after WSL restarts (the
// containers carry the sources in a label) and starts the containers that
// could not start without them, takes down the binds its earlier runs
// left for containers that are gone (read from its folder and the mount
// table each time it resyncs with the engine, not from memory), and
// serves a bind service so that \\wsl$\<distro>\… paths sent from Windows
// reach the same binds. One proxy serves a distro: it holds its folder
// locked (flock) while it runs. It also keeps the distro's links to the
// CLI tools ddinit offers (package clitools makes and checks them).
//
// It must never unmount or remove anything but the binds it made, under
// its own distro's folder (a mount there named like a bind id; any other
// entry is left alone), nor bind the shared tmpfs into itself: a
// propagated mount or unmount under the shared tmpfs reaches every
// distro. What may be bound is BindPolicy's to say; the mounts are made by
// package mounts, never following a symlink.
package distroproxy

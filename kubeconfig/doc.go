// Package kubeconfig puts the docker-desktop context of the cluster
// ddinit runs into a distro user's kubeconfig, and takes it out again.
//
// ddinit run offers the cluster's admin kubeconfig in the tmpfs every
// distro shares; `ddinit proxy` (package clitools) reads it there and,
// through this package, merges its cluster, user and context — all three
// named docker-desktop, as Docker Desktop names them — into the default
// user's ~/.kube/config.
//
// It owns: what is taken from the offer (ParseOffer: the server, on the
// loopback, and inline credentials, nothing that runs a program or names
// a file), the edit of a user's file (Merge, Remove: only the entries
// named docker-desktop and an unset current-context change; everything
// else in the file, keys it does not know, comments and order included,
// is kept, and an edit whose result does not decode to exactly what was
// meant is refused), which user (DefaultUser) and how the file is written
// (Update: as that user, never through a symlink planted at ~/.kube, in
// one rename, under kubectl's own lock).
//
// It must not decide when to merge (the proxy's periodic pass does) nor
// write anything outside a user's kubeconfig and the folder it lives in.
package kubeconfig

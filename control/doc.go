// Package control is ddinit's control API: its types (what /status and
// /logs say), its routes and server, and its client, used by the CLI and
// by the frontend's stand-in. HTTP/1.1 on any of package transport's
// transports (vsock for the Windows frontend, a unix socket in the
// distro). StatusCode (errors.go) is the one place an error's kind
// (containerd's errdefs, settings.ErrRolledBack) becomes a status code;
// the client turns codes back into kinds.
//
// It must not decide what it reports: PID 1 implements Backend (and ddinit
// run, with the server in StandIn mode, between two PID 1s), and health
// policy lives in package services. It opens no sockets itself and
// matches no error text.
package control

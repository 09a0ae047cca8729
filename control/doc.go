// Package control is ddinit's control API: its types (what /status and
// /logs say), its routes and server, and its client, used by the CLI and
// by the frontend's stand-in. HTTP/1.1 on any transport package vsock
// gives (vsock for the Windows frontend, a unix socket in the distro).
//
// It must not decide what it reports: PID 1 implements Backend, and
// health policy lives in package services. It opens no sockets itself.
package control

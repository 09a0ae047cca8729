// Package dockerproxy is the HTTP-aware docker API proxy ddinit puts on
// the docker sockets it exposes (and that `ddinit proxy` serves in each
// integrated distro). It understands just enough of the docker API to
// rewrite the bind sources of POST /containers/create into paths the
// engine can see (Windows paths, a distro's paths) and to reserve a
// container's published ports before POST /containers/{id}/start, so that
// a port already taken fails the start as Docker Engine does. Every other
// request, and every byte of every body and stream it does not rewrite,
// passes through untouched and unbuffered: hijacked connections (attach,
// exec, HTTP Upgrade), streams (logs -f, events, stats), chunked and large
// bodies, keep-alive, HEAD, half-close.
//
// It must not know where a path maps to or how a port is published: the
// caller gives it a Translate function and a PortReserver. It listens on
// nothing itself: Serve takes a listener from package vsock.
package dockerproxy

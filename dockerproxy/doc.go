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
// bodies, keep-alive, HEAD, half-close. Those bytes go socket to socket
// in the kernel where they can (transport.CopyN, splice(2)): upgraded
// streams, and the runs of a body of 64 KB or more (a length-framed body,
// a large chunk); smaller chunks, as the docker CLI's uploads come, are
// read into one buffer, never past the body's end, and go out in large
// writes, which measured faster for them; a stream waiting for its next
// chunk holds no such buffer.
//
// It frames HTTP as Go's net/http server does (interim answers, early
// answers, chunked bodies through their trailers, pipelining), and bounds
// what a client can make it hold: deadlines on heads and idle
// connections, small buffers taken when needed and given back as soon as
// they are not, one budget for the create bodies and the large heads it
// buffers, shared fairly by its clients (package fairshare). Only a proxy
// that trusts its clients honours the markers of ddinit's own requests
// (package engineclient's InternalHeader and ClientHeader); every other
// strips them. A client's keep-alive connection outlives the engine
// connection behind it: one the
// engine let go while idle is replaced, and a request it cannot have acted
// on goes again. It edits a create body in place (jsonspan.go): every byte
// an edit does not edit is passed on as sent; it reads the body's keys as
// dockerd does (encoding/json, which takes a key for a field whatever its
// case), puts what it adds where the engine behind it reads it (dockerd
// before API 1.46 takes the host's fields from the top level of a body
// without a HostConfig: it asks the engine's version for such a body) and
// refuses one that gives a field it edits twice. The files go by duty:
// proxy.go (a connection's life), exchange.go (one request and its
// answer), message.go (heads and framing), chunked.go (a chunked body's
// framing, followed as it is copied), create.go (the edits of a
// create body), jsonspan.go (where a body's values are), watch.go
// (clients that go away), budget.go.
//
// It knows the docker API and the syntax of Windows paths, not where
// anything is: where drives and distros' files are seen by the engine,
// and how a port is published, the caller says (WindowsPaths.Inside, a
// Translator, a PortReserver). It listens on nothing itself: Serve takes a
// listener from package transport.
package dockerproxy

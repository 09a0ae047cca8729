// Package transport owns how ddinit's sockets are named and reached: the one
// address syntax (vsock://CID:PORT, unix:///path, tcp://127.0.0.1:PORT),
// listening and dialing on each transport, and forwarders that carry a
// connection from a listening address to a target socket (ForwardPort: a
// TCP or UDP port published in the distro).
//
// It must not know what flows through a socket: protocols (the control
// API, docker's API) live with their owners and only use these transports.
package transport

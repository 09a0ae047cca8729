// Package engineclient is ddinit's own small client of the docker
// engine's API: the requests ddinit makes for itself (the port publisher
// following containers, a distro's proxy rebinding their sources, PID 1
// asking which containers run), each on a connection of its own, marked
// as ddinit's (InternalHeader) so that the exposed sockets neither count
// them as a client keeping the engine up nor wake a stopped engine for
// them, and a context mark (WithInternal) that says the same to a dial.
//
// It must not know where the engine is (the caller gives a dial) nor serve
// anything: the proxy that honours or strips the marks is dockerproxy's.
package engineclient

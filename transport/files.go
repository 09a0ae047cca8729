package transport

import (
	"fmt"
	"net"
	"os"

	"github.com/sirupsen/logrus"
	"os/user"
	"strconv"
)

// ListenFile makes a listening socket for a as a file, to hand to another
// process (ddinit run opens PID 1's control sockets this way). A unix
// socket gets mode; the caller removes its path when done.
func ListenFile(a Addr, mode os.FileMode) (*os.File, error) {
	if a.Scheme == "vsock" {
		return listenVsockFile(a)
	}
	l, err := Listen(a)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var f *os.File
	switch l := l.(type) {
	case *net.UnixListener:
		l.SetUnlinkOnClose(false) // the path must outlive this copy
		if err := os.Chmod(a.Path, mode); err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		f, err = l.File()
	case *net.TCPListener:
		f, err = l.File()
	default:
		return nil, fmt.Errorf("listen %s: cannot hand this listener on", a)
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	return f, nil
}

// FileListener turns a listening socket file made by ListenFile back into
// a listener.
func FileListener(a Addr, f *os.File) (net.Listener, error) {
	defer f.Close()
	if a.Scheme == "vsock" {
		return vsockFileListener(f)
	}
	return net.FileListener(f)
}

// PeerPolicy says which vsock peers a listener accepts.
type PeerPolicy struct {
	// AllowLocal admits CID 1 (this machine): only for tests, where the
	// frontend's stand-in runs inside the same VM.
	AllowLocal bool
}

// Filter wraps l so that vsock connections from any peer but the host
// (CID 2), and CID 1 when allowed, are closed at once. Other transports
// pass through.
func Filter(l net.Listener, a Addr, p PeerPolicy, log logrus.FieldLogger) net.Listener {
	if a.Scheme != "vsock" {
		return l
	}
	return &filtered{Listener: l, policy: p, log: log}
}

type filtered struct {
	net.Listener
	policy PeerPolicy
	log    logrus.FieldLogger
}

func (f *filtered) Accept() (net.Conn, error) {
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cid, ok := peerCID(c)
		if ok && (cid == CIDHost || (f.policy.AllowLocal && cid == CIDLocal)) {
			return c, nil
		}
		f.log.WithField("peerCID", cid).Warn("refused a vsock connection from a peer that is not the host")
		c.Close()
	}
}

// ListenOwned listens on a; a unix socket gets mode and the group gid
// (its owner is root, who runs ddinit). The socket is made under the
// umask (which leaves others no write, so no connect) and then given them.
func ListenOwned(a Addr, mode os.FileMode, gid int) (net.Listener, error) {
	l, err := Listen(a)
	if err != nil || a.Scheme != "unix" {
		return l, err
	}
	if err := os.Chown(a.Path, 0, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	if err := os.Chmod(a.Path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	return l, nil
}

// DockerGroup is the docker group's id on this system, as Docker Engine
// gives its socket: members use docker without sudo. With no such group
// it is root's (0): only root can, which is what a socket of mode 0660
// owned by root means.
func DockerGroup() int {
	gid, _ := LookupDockerGroup()
	return gid
}

// LookupDockerGroup is DockerGroup, with why it is root's when there is
// no docker group (for a caller that says so).
func LookupDockerGroup() (int, error) {
	g, err := user.LookupGroup("docker")
	if err != nil {
		return 0, err
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("the docker group's id %q: %w", g.Gid, err)
	}
	return gid, nil
}

package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	mdvsock "github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Well-known context IDs.
const (
	CIDLocal = mdvsock.Local // this machine (loopback transport)
	CIDHost  = mdvsock.Host  // the host: the Windows side of WSL's VM
)

func parseCID(a Addr) (uint32, error) {
	if a.Host == "" {
		return unix.VMADDR_CID_ANY, nil
	}
	cid, err := strconv.ParseUint(a.Host, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: CID: %w", a, err)
	}
	return uint32(cid), nil
}

func listenVsock(a Addr) (net.Listener, error) {
	f, err := listenVsockFile(a)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mdvsock.FileListener(f)
}

// listenVsockFile makes a listening AF_VSOCK socket as a file, so that it
// can be handed to another process.
func listenVsockFile(a Addr) (*os.File, error) {
	cid, err := parseCID(a)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen %s: AF_VSOCK: %w", a, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: cid, Port: a.Port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: bind: %w", a, err)
	}
	if err := unix.Listen(fd, 1024); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", a, err)
	}
	return os.NewFile(uintptr(fd), a.String()), nil
}

func dialVsock(a Addr, timeout time.Duration) (net.Conn, error) {
	cid, err := parseCID(a)
	if err != nil {
		return nil, err
	}
	if a.Host == "" {
		return nil, fmt.Errorf("dial %s: a CID is needed to dial", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := mdvsock.DialContext(ctx, cid, a.Port, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", a, err)
	}
	return c, nil
}

// peerCID is the context ID of a vsock connection's peer.
func peerCID(c net.Conn) (uint32, bool) {
	if a, ok := c.RemoteAddr().(*mdvsock.Addr); ok {
		return a.ContextID, true
	}
	return 0, false
}

func vsockFileListener(f *os.File) (net.Listener, error) { return mdvsock.FileListener(f) }

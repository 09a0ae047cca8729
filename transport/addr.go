package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Addr is a parsed socket address.
type Addr struct {
	Scheme string // "unix", "tcp" or "vsock"
	Path   string // unix
	Host   string // tcp: an IP; vsock: a CID, empty when listening on any
	Port   uint32
}

func (a Addr) String() string {
	switch a.Scheme {
	case "unix":
		return "unix://" + a.Path
	case "tcp":
		return fmt.Sprintf("tcp://%s", net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))))
	}
	return fmt.Sprintf("vsock://%s:%d", a.Host, a.Port)
}

// Ports WSL itself uses on vsock.
const (
	wslPortFirst = 50000
	wslPortLast  = 50005
)

// Parse reads "unix:///abs/path", "tcp://127.0.0.1:PORT" or
// "vsock://CID:PORT" ("vsock://:PORT" to listen on any CID).
func Parse(s string) (Addr, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Addr{}, fmt.Errorf("address %q: want unix:///path, tcp://127.0.0.1:PORT or vsock://CID:PORT", s)
	}
	switch scheme {
	case "unix":
		if !filepath.IsAbs(rest) {
			return Addr{}, fmt.Errorf("address %q: a unix socket path must be absolute", s)
		}
		if len(rest) > 107 {
			return Addr{}, fmt.Errorf("address %q: a unix socket path is at most 107 bytes", s)
		}
		return Addr{Scheme: "unix", Path: filepath.Clean(rest)}, nil
	case "tcp":
		ap, err := netip.ParseAddrPort(rest)
		if err != nil {
			return Addr{}, fmt.Errorf("address %q: %w", s, err)
		}
		if !ap.Addr().IsLoopback() {
			return Addr{}, fmt.Errorf("address %q: tcp is for development and only on loopback", s)
		}
		return Addr{Scheme: "tcp", Host: ap.Addr().String(), Port: uint32(ap.Port())}, nil
	case "vsock":
		host, port, ok := strings.Cut(rest, ":")
		if !ok {
			return Addr{}, fmt.Errorf("address %q: want vsock://CID:PORT", s)
		}
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			return Addr{}, fmt.Errorf("address %q: port: %w", s, err)
		}
		if p >= wslPortFirst && p <= wslPortLast {
			return Addr{}, fmt.Errorf("address %q: vsock ports %d-%d belong to WSL", s, wslPortFirst, wslPortLast)
		}
		if host != "" {
			if _, err := strconv.ParseUint(host, 10, 32); err != nil {
				return Addr{}, fmt.Errorf("address %q: CID: %w", s, err)
			}
		}
		return Addr{Scheme: "vsock", Host: host, Port: uint32(p)}, nil
	}
	return Addr{}, fmt.Errorf("address %q: unknown scheme %q (want unix, tcp or vsock)", s, scheme)
}

// Listen listens on a. A unix socket file left by a dead process is
// replaced; one a live process still answers on is not taken over.
func Listen(a Addr) (net.Listener, error) {
	switch a.Scheme {
	case "unix":
		if err := os.MkdirAll(filepath.Dir(a.Path), 0o755); err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		if err := removeStaleSocket(a.Path); err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		l, err := net.Listen("unix", a.Path)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(true)
		return l, nil
	case "tcp":
		l, err := net.Listen("tcp", net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))))
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		return l, nil
	case "vsock":
		return listenVsock(a)
	}
	return nil, fmt.Errorf("listen %s: unknown scheme", a)
}

// ErrSocketInUse means a live process answers on a unix socket path.
var ErrSocketInUse = errors.New("a live process is listening on this socket")

func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, 500*time.Millisecond)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	return os.Remove(path)
}

// Dial connects to a.
// DialContext is Dial bounded by ctx's deadline (10 s without one).
func DialContext(ctx context.Context, a Addr) (net.Conn, error) {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return Dial(a, timeout)
}

// DialUnix connects to the unix socket at path, as ctx allows: the one
// dialer every client of a local socket (dockerd's, a proxy's) uses.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

func Dial(a Addr, timeout time.Duration) (net.Conn, error) {
	switch a.Scheme {
	case "unix":
		return net.DialTimeout("unix", a.Path, timeout)
	case "tcp":
		return net.DialTimeout("tcp", net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))), timeout)
	case "vsock":
		return dialVsock(a, timeout)
	}
	return nil, fmt.Errorf("dial %s: unknown scheme", a)
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Forwarder accepts connections on a listener and joins each to a new
// connection to its target, full duplex, passing half-closes along.
type Forwarder struct {
	Name     string
	Listener net.Listener
	// Dial opens the target; it is called once per accepted connection.
	Dial func(ctx context.Context) (net.Conn, error)
	// Handle, when set, serves each accepted connection instead of Dial
	// and a byte-for-byte join (a protocol-aware proxy on the same accept
	// loop); it must close the connection.
	Handle func(ctx context.Context, c net.Conn)
	// MaxConns bounds concurrent connections; 0 means DefaultMaxConns. One
	// peer (PeerKey) holds at most a quarter of them, and an eighth is
	// kept for peers that hold none: a runaway client cannot lock the
	// others out.
	MaxConns int
	// DialTimeout bounds Dial (10 s when zero): a Dial that holds the
	// connection while the target wakes needs longer.
	DialTimeout time.Duration
	Log         logrus.FieldLogger

	wg      sync.WaitGroup
	refused logs.Every
	mu      sync.Mutex
	active  map[net.Conn]struct{} // the connections being served
}

// DefaultMaxConns bounds a forwarder's concurrent connections: enough that
// thousands of idle or slow clients (each cut off by its server's
// deadlines) leave room for the others, few enough to stay well inside
// the descriptor limit.
const DefaultMaxConns = 8192

// Serve accepts until the listener is closed; then it closes the
// connections it still serves (a stream, an idle keep-alive client) and
// returns once every one has ended. Accept errors that are temporary are
// retried with backoff instead of spinning.
func (f *Forwarder) Serve(ctx context.Context) error {
	limit := f.MaxConns
	if limit <= 0 {
		limit = DefaultMaxConns
	}
	slots := &fairshare.Pool{Limit: int64(limit)}
	var delay time.Duration
	for {
		c, err := f.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				f.mu.Lock()
				for c := range f.active {
					c.Close()
				}
				f.mu.Unlock()
				f.wg.Wait()
				return nil
			}
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			f.Log.WithError(err).WithField("retryIn", delay).Warn("accept failed")
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		peer := PeerKey(c)
		if why := slots.TakeWhy(peer, 1); why != fairshare.Granted {
			if ok, held := f.refused.Allow(); ok {
				f.Log.WithFields(logrus.Fields{"limit": limit, "peer": peer, "why": why.String(), "alsoRefused": held}).Warn("too many connections; refusing one")
			}
			c.Close()
			continue
		}
		f.mu.Lock()
		if f.active == nil {
			f.active = map[net.Conn]struct{}{}
		}
		f.active[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer slots.Give(peer, 1)
			defer func() {
				f.mu.Lock()
				delete(f.active, c)
				f.mu.Unlock()
			}()
			if f.Handle != nil {
				f.Handle(ctx, c)
				return
			}
			f.join(ctx, c)
		}()
	}
}

func (f *Forwarder) join(ctx context.Context, c net.Conn) {
	defer c.Close()
	timeout := f.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	t, err := f.Dial(ctx)
	cancel()
	if err != nil {
		f.Log.WithError(err).Debug("target unreachable")
		return
	}
	defer t.Close()
	Join(c, t)
}

// Join copies both ways between a and b until both directions are done.
// When one side stops sending, the other side's write half is closed so
// the peer sees EOF while replies still flow.
func Join(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(b, a) }()
	go func() { defer wg.Done(); pipe(a, b) }()
	wg.Wait()
}

func pipe(dst, src net.Conn) {
	_, err := copyStream(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
	} else {
		// An error on one side ends the connection both ways.
		dst.Close()
		src.Close()
	}
}

// PeerKey names the other end of a connection as a client of a shared
// limit: a vsock peer by its context ID (the Windows host is one client
// however many connections it opens), a unix peer by the process that
// connected (its pid as this process sees it, 0 for one in another pid
// namespace, such as another WSL distro's, and its uid), a TCP peer by its
// address.
func PeerKey(c net.Conn) string {
	if cid, ok := peerCID(c); ok {
		return fmt.Sprintf("vsock/%d", cid)
	}
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return "tcp/" + a.IP.String()
	}
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			var cred *unix.Ucred
			var credErr error
			raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
			if credErr == nil && cred != nil {
				return fmt.Sprintf("unix/%d/%d", cred.Pid, cred.Uid)
			}
		}
	}
	return "unknown"
}

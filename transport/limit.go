package transport

import (
	"net"
	"os"
	"sync"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
)

// LimitPerPeer wraps l so that at most limit of its connections are open
// at once, shared by peers (PeerKey) as a Forwarder shares its own: one
// peer holds at most a quarter, an eighth is kept for peers that hold
// none. A connection past that is closed as soon as it is accepted. For
// servers that take a listener (the control API's HTTP server) rather
// than a Forwarder.
func LimitPerPeer(l net.Listener, limit int, log logrus.FieldLogger) net.Listener {
	return &peerLimited{Listener: l, pool: &fairshare.Pool{Limit: int64(limit)}, log: log}
}

type peerLimited struct {
	net.Listener
	pool    *fairshare.Pool
	log     logrus.FieldLogger
	refused logs.Every
}

func (p *peerLimited) Accept() (net.Conn, error) {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := PeerKey(c)
		if why := p.pool.TakeWhy(peer, 1); why != fairshare.Granted {
			if ok, held := p.refused.Allow(); ok {
				p.log.WithFields(logrus.Fields{"limit": p.pool.Limit, "peer": peer, "why": why.String(), "alsoRefused": held}).Warn("too many connections; refusing one")
			}
			c.Close()
			continue
		}
		return &peerConn{Conn: c, give: func() { p.pool.Give(peer, 1) }}, nil
	}
}

// peerConn gives its peer's share back when it is first closed.
type peerConn struct {
	net.Conn
	once sync.Once
	give func()
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.give)
	return err
}

// CloseWrite passes a half-close on, where the connection has one.
func (c *peerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// GuardedFileListener is a listening socket handed over as f, served only
// to the peers policy admits (on vsock), each with its share of maxConns
// connections: what the control API listens on.
func GuardedFileListener(a Addr, f *os.File, policy PeerPolicy, maxConns int, log logrus.FieldLogger) (net.Listener, error) {
	l, err := FileListener(a, f)
	if err != nil {
		return nil, err
	}
	return LimitPerPeer(Filter(l, a, policy, log), maxConns, log), nil
}

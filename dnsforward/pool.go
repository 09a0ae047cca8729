package dnsforward

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// A socket per query costs more than the forwarding itself (socket,
// connect, close: measured at half a forwarded query's time), so UDP
// sockets to a server are kept and used again — a while only, so that the
// source port, with the random ID, keeps changing as a resolver's must
// against forged answers.
const (
	poolUses    = 100              // queries a socket carries
	poolAge     = 30 * time.Second // and for how long
	poolIdleMax = 16               // idle sockets kept per server
)

type udpPool struct {
	mu   sync.Mutex
	idle map[netip.AddrPort][]*pooledConn
}

type pooledConn struct {
	*dns.Conn
	uses int
	born time.Time
}

func (p *udpPool) get(server netip.AddrPort) (*pooledConn, error) {
	p.mu.Lock()
	for list := p.idle[server]; len(list) > 0; list = p.idle[server] {
		c := list[len(list)-1]
		p.idle[server] = list[:len(list)-1]
		if time.Since(c.born) < poolAge {
			p.mu.Unlock()
			return c, nil
		}
		c.Close() // too old to use again
	}
	p.mu.Unlock()
	c, err := net.Dial("udp", server.String())
	if err != nil {
		return nil, err
	}
	// Room for more than a server is asked for (1232 bytes).
	return &pooledConn{Conn: &dns.Conn{Conn: c, UDPSize: 4096}, born: time.Now()}, nil
}

func (p *udpPool) put(server netip.AddrPort, c *pooledConn) {
	c.uses++
	p.mu.Lock()
	if c.uses < poolUses && time.Since(c.born) < poolAge && len(p.idle[server]) < poolIdleMax {
		if p.idle == nil {
			p.idle = map[netip.AddrPort][]*pooledConn{}
		}
		p.idle[server] = append(p.idle[server], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// exchange asks server q over a pooled socket, within try. An answer to
// an earlier question on the socket (one that came after its query gave
// up) is read past; a socket that failed is closed, not kept.
func (p *udpPool) exchange(ctx context.Context, q *dns.Msg, server netip.AddrPort, try time.Duration) (*dns.Msg, error) {
	c, err := p.get(server)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(try)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetDeadline(deadline)
	if err := c.WriteMsg(q); err != nil {
		c.Close()
		return nil, err
	}
	for {
		r, err := c.ReadMsg()
		if err != nil {
			c.Close()
			return nil, err
		}
		if answers(r, q) {
			p.put(server, c)
			return r, nil
		}
	}
}

// keepOnly closes the idle sockets to servers not in servers (asked on
// port, when not 0).
func (p *udpPool) keepOnly(servers []netip.AddrPort, port uint16) {
	p.mu.Lock()
	var drop []*pooledConn
	for s, list := range p.idle {
		named := slices.ContainsFunc(servers, func(n netip.AddrPort) bool {
			return n == s || port != 0 && netip.AddrPortFrom(n.Addr(), port) == s
		})
		if !named {
			drop = append(drop, list...)
			delete(p.idle, s)
		}
	}
	p.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
}

// close closes the idle sockets.
func (p *udpPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

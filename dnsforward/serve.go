package dnsforward

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/miekg/dns"
)

// Server serves a Forwarder on the sockets it is given (made where the
// caller chose: in another network namespace, on a link's address).
type Server struct {
	f       *Forwarder
	packets []net.PacketConn
	tcp     []*dns.Server
	conns   *fairshare.Pool // TCP connections, per source address
	wg      sync.WaitGroup
}

// Serve answers queries through f on each packet conn (UDP) and listener
// (TCP) until Close.
func Serve(f *Forwarder, packets []net.PacketConn, listeners []net.Listener) *Server {
	f.init()
	s := &Server{f: f, packets: packets, conns: &fairshare.Pool{Limit: maxTCPConns, Share: maxTCPConnsPerClient, Reserve: tcpConnsReserve}}
	for _, pc := range packets {
		// A reader waiting for a nameserver holds a slot: with as many
		// readers as slots and a few more, a query the slots refuse (or a
		// local name) is still read and answered at once, and a flood of
		// refused queries starts no reader beyond that.
		u := &udpServer{f: f, pc: pc, wg: &s.wg, maxReaders: int32(f.slots.Limit) + maxIdleReaders}
		u.readers.Store(1)
		s.wg.Add(1)
		go u.read()
	}
	for _, l := range listeners {
		// A TCP client gets a few seconds per query and for the idle
		// connection between them, then is closed (RFC 7766's advice); at
		// most maxTCPConns at once, so containers cannot take every
		// descriptor of the process that also serves the docker API, and
		// of those one source at most its share: a connection over it is
		// closed at once, and the others' are still taken.
		l = &fairListener{Listener: l, conns: s.conns}
		s.startTCP(&dns.Server{Listener: l, Handler: f, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }, MaxTCPQueries: 128})
	}
	return s
}

func (s *Server) startTCP(ds *dns.Server) {
	started := make(chan struct{})
	var once sync.Once
	ds.NotifyStartedFunc = func() { once.Do(func() { close(started) }) }
	s.tcp = append(s.tcp, ds)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ds.ActivateAndServe()
		once.Do(func() { close(started) })
	}()
	<-started
}

// Close stops serving, closes the sockets and waits for the servers and
// the queries in flight.
func (s *Server) Close() error {
	var errs []error
	for _, pc := range s.packets {
		errs = append(errs, pc.Close())
	}
	for _, ds := range s.tcp {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := ds.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	s.wg.Wait()
	s.f.pool.close()
	return errors.Join(errs...)
}

// udpServer reads queries off one UDP socket with goroutines that each
// answer the query they read before reading again: no goroutine is made
// per query (its start and stack growth cost more than a local answer).
// When every reader is busy (with slow nameservers) one more starts, up to
// maxReaders, so a query never waits for another's answer; readers beyond
// a few idle ones end.
type udpServer struct {
	f          *Forwarder
	pc         net.PacketConn
	wg         *sync.WaitGroup
	idle       atomic.Int32
	readers    atomic.Int32
	maxReaders int32
}

const (
	maxIdleReaders = 4
	// maxTCPConns caps the TCP connections at once: resolvers use TCP for
	// truncated answers only, one connection a query. One source may hold
	// 16 (a container resolving many large answers at once), and 16 are
	// kept for sources that hold none: 7 greedy sources leave them.
	maxTCPConns          = 128
	maxTCPConnsPerClient = maxTCPConns / 8
	tcpConnsReserve      = maxTCPConns / 8
)

// fairListener accepts at most a share of the connections from one
// source address; one over it is closed at once (its resolver tries
// again, or gives up), not left waiting for the others' to end.
type fairListener struct {
	net.Listener
	conns *fairshare.Pool
}

func (l *fairListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := addrOf(c.RemoteAddr()).String()
		if !l.conns.Take(client, 1) {
			c.Close()
			continue
		}
		return &fairConn{Conn: c, conns: l.conns, client: client}, nil
	}
}

// fairConn gives its place back when it is closed.
type fairConn struct {
	net.Conn
	conns  *fairshare.Pool
	client string
	once   sync.Once
}

func (c *fairConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.conns.Give(c.client, 1) })
	return err
}

func (u *udpServer) read() {
	defer u.wg.Done()
	defer u.readers.Add(-1)
	buf := make([]byte, dns.MaxMsgSize)
	for {
		// A reader becomes one more idle reader only while there are
		// fewer than maxIdleReaders: readers ending a burst all at once
		// must not each see room and all wait for datagrams for ever.
		if !u.becomeIdle() {
			return
		}
		n, addr, err := u.pc.ReadFrom(buf)
		if u.idle.Add(-1) == 0 && err == nil {
			if u.readers.Add(1) <= u.maxReaders {
				u.wg.Add(1)
				go u.read()
			} else {
				u.readers.Add(-1)
			}
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		u.answer(buf[:n], addr)
	}
}

// becomeIdle counts the reader idle, or reports false when enough are:
// then it ends (there is always one reading, as it ends only beside
// maxIdleReaders idle ones).
func (u *udpServer) becomeIdle() bool {
	for {
		n := u.idle.Load()
		if n >= maxIdleReaders {
			return false
		}
		if u.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// answer answers one datagram; one that is no DNS message gets nothing,
// as a server under a flood of junk must not answer it.
func (u *udpServer) answer(b []byte, addr net.Addr) {
	q := new(dns.Msg)
	if q.Unpack(b) != nil {
		return
	}
	resp := u.f.Answer(context.Background(), q, addrOf(addr), false)
	if resp == nil {
		return
	}
	// What does not fit the client's UDP size is cut, marked truncated:
	// it asks again over TCP.
	resp.Truncate(udpSize(q))
	out, err := resp.Pack()
	if err != nil {
		return
	}
	_, _ = u.pc.WriteTo(out, addr) // a client gone has nobody to tell
}

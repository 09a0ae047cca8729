package dnsforward

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// Server serves a Forwarder on the sockets it is given (made where the
// caller chose: in another network namespace, on a link's address).
type Server struct {
	f       *Forwarder
	packets []net.PacketConn
	tcp     []*dns.Server
	wg      sync.WaitGroup
}

// Serve answers queries through f on each packet conn (UDP) and listener
// (TCP) until Close.
func Serve(f *Forwarder, packets []net.PacketConn, listeners []net.Listener) *Server {
	f.init()
	s := &Server{f: f, packets: packets}
	for _, pc := range packets {
		u := &udpServer{f: f, pc: pc, wg: &s.wg}
		s.wg.Add(1)
		go u.read()
	}
	for _, l := range listeners {
		// A TCP client gets a few seconds per query and for the idle
		// connection between them, then is closed (RFC 7766's advice); at
		// most maxTCPConns at once, so containers cannot take every
		// descriptor of the process that also serves the docker API.
		l = netutil.LimitListener(l, maxTCPConns)
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
// When every reader is busy (with slow nameservers) one more starts, so a
// query never waits for another's answer; readers beyond a few idle ones
// end.
type udpServer struct {
	f    *Forwarder
	pc   net.PacketConn
	wg   *sync.WaitGroup
	idle atomic.Int32
}

const (
	maxIdleReaders = 4
	maxTCPConns    = 128
)

func (u *udpServer) read() {
	defer u.wg.Done()
	buf := make([]byte, dns.MaxMsgSize)
	for {
		u.idle.Add(1)
		n, addr, err := u.pc.ReadFrom(buf)
		if u.idle.Add(-1) == 0 && err == nil {
			u.wg.Add(1)
			go u.read()
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		u.answer(buf[:n], addr)
		if u.idle.Load() >= maxIdleReaders {
			return
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
	resp := u.f.Answer(context.Background(), q, false)
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

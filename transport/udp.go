package transport

import (
	"net"
	"sync"
	"time"
)

// udpRelay forwards datagrams from each client to the target through a
// socket of its own, and the replies back; idle clients are forgotten.
type udpRelay struct {
	conn  *net.UDPConn
	dial  func() (net.Conn, error) // a socket to the target, for one client
	mu    sync.Mutex
	peers map[string]net.Conn
	done  chan struct{}
}

const udpIdle = 90 * time.Second

func newUDPRelay(network, listen string, dial func() (net.Conn, error)) (*udpRelay, error) {
	la, err := net.ResolveUDPAddr(network, listen)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP(network, la)
	if err != nil {
		return nil, err
	}
	r := &udpRelay{conn: c, dial: dial, peers: map[string]net.Conn{}, done: make(chan struct{})}
	go r.serve()
	return r, nil
}

func (r *udpRelay) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := r.upstream(from)
		if up != nil {
			up.Write(buf[:n])
		}
	}
}

func (r *udpRelay) upstream(from *net.UDPAddr) net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.done:
		return nil
	default:
	}
	if up, ok := r.peers[from.String()]; ok {
		return up
	}
	up, err := r.dial()
	if err != nil {
		return nil
	}
	r.peers[from.String()] = up
	go func() {
		buf := make([]byte, 65535)
		for {
			up.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := up.Read(buf)
			if err != nil {
				break
			}
			r.conn.WriteToUDP(buf[:n], from)
		}
		r.mu.Lock()
		delete(r.peers, from.String())
		r.mu.Unlock()
		up.Close()
	}()
	return up
}

// Close stops the relay and its client sockets.
func (r *udpRelay) Close() error {
	r.mu.Lock()
	close(r.done)
	for _, up := range r.peers {
		up.Close()
	}
	r.mu.Unlock()
	return r.conn.Close()
}

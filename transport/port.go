package transport

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// ForwardPort listens on listen (host:port) for proto, "tcp" or "udp",
// and carries each TCP connection, or each UDP client's datagrams, to a
// connection dial opens (one per TCP connection, one per UDP client):
// a port published in the distro for what runs in the engine's
// namespace (a container's, a Kubernetes Service's, the API server's).
// An IPv6 address listens on IPv6 alone (IPV6_V6ONLY): something else
// may hold the IPv4 port. The wildcard 0.0.0.0 listens on both. Close
// stops listening and closes the connections still carried.
func ForwardPort(proto, listen string, dial func(ctx context.Context) (net.Conn, error), log logrus.FieldLogger) (*Port, error) {
	family := ""
	if host, _, _ := net.SplitHostPort(listen); strings.Contains(host, ":") {
		family = "6"
	}
	switch proto {
	case "tcp":
		l, err := net.Listen("tcp"+family, listen)
		if err != nil {
			return nil, err
		}
		f := &Forwarder{Listener: l, Log: log, Dial: dial}
		served := make(chan struct{})
		go func() {
			defer close(served)
			f.Serve(context.Background())
		}()
		return &Port{addr: l.Addr(), close: func() error {
			err := l.Close()
			<-served // its connections closed too
			return err
		}}, nil
	case "udp":
		r, err := newUDPRelay("udp"+family, listen, func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return dial(ctx)
		})
		if err != nil {
			return nil, err
		}
		return &Port{addr: r.conn.LocalAddr(), close: r.Close}, nil
	}
	return nil, fmt.Errorf("forward %s %s: no such protocol (want tcp or udp)", proto, listen)
}

// Port is a port ForwardPort serves.
type Port struct {
	addr  net.Addr
	close func() error
}

// Addr is where the port listens (the port the kernel chose for :0).
func (p *Port) Addr() net.Addr { return p.addr }

// Close stops listening, and closes what the port still carries.
func (p *Port) Close() error { return p.close() }

package dnsforward

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkForwardedQuery: one client asking, one query at a time, through
// the forwarder to a local upstream (profile with -cpuprofile).
func BenchmarkForwardedQuery(b *testing.B) {
	t := &testing.T{}
	port := freePort(t)
	startUpstreamB(b, "127.0.0.11", port)
	f := &Forwarder{ResolvConf: resolvConf(t, b.TempDir(), "127.0.0.11"), port: uint16(port)}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := Serve(f, []net.PacketConn{pc}, nil)
	defer s.Close()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	co := &dns.Conn{Conn: c}
	q := query("intranet.corp", dns.TypeA)
	b.ResetTimer()
	for range b.N {
		if err := co.WriteMsg(q); err != nil {
			b.Fatal(err)
		}
		if _, err := co.ReadMsg(); err != nil {
			b.Fatal(err)
		}
	}
}

func startUpstreamB(b *testing.B, addr string, port int) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, itoa(port)))
	if err != nil {
		b.Skip(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(answerA("10.20.30.40"))}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go s.ActivateAndServe()
	<-started
	b.Cleanup(func() { s.Shutdown() })
}

// BenchmarkDirectQuery is BenchmarkForwardedQuery's baseline: the same
// client straight to the same upstream.
func BenchmarkDirectQuery(b *testing.B) {
	t := &testing.T{}
	port := freePort(t)
	startUpstreamB(b, "127.0.0.12", port)
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.12", itoa(port)))
	if err != nil {
		b.Fatal(err)
	}
	co := &dns.Conn{Conn: c}
	q := query("intranet.corp", dns.TypeA)
	b.ResetTimer()
	for range b.N {
		if err := co.WriteMsg(q); err != nil {
			b.Fatal(err)
		}
		if _, err := co.ReadMsg(); err != nil {
			b.Fatal(err)
		}
	}
}

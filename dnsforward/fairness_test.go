package dnsforward

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// What one client (a source address) does to the others: however it
// floods, the others' queries are answered.

// droppingUpstream is a nameserver on addr:port (UDP) that answers every
// name with 10.5.5.5 but those under drop.example, which it reads and
// never answers (a domain whose nameserver drops queries).
func droppingUpstream(t *testing.T, addr string, port int) {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s:%d: %v", addr, port, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 || strings.HasSuffix(q.Question[0].Name, "drop.example.") {
				continue
			}
			r := new(dns.Msg)
			r.SetReply(q)
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 10.5.5.5")
			r.Answer = append(r.Answer, rr)
			b, _ := r.Pack()
			pc.WriteTo(b, from)
		}
	}()
}

// flooder sends queries from its own source address and counts the
// SERVFAILs it gets back.
type flooder struct {
	pc       net.PacketConn
	servfail atomic.Int64
	answered atomic.Int64
}

func newFlooder(t *testing.T, from string) *flooder {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(from, "0"))
	if err != nil {
		t.Skipf("cannot bind %s: %v", from, err)
	}
	fl := &flooder{pc: pc}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r := new(dns.Msg)
			if r.Unpack(buf[:n]) != nil {
				continue
			}
			if r.Rcode == dns.RcodeServerFailure {
				fl.servfail.Add(1)
			} else {
				fl.answered.Add(1)
			}
		}
	}()
	return fl
}

// send sends n queries for names under drop.example, not waiting for
// answers.
func (fl *flooder) send(t *testing.T, server net.Addr, n int) {
	t.Helper()
	for i := range n {
		b, _ := query(fmt.Sprintf("n%d.%s.drop.example", i, fl.ip()), dns.TypeA).Pack()
		if _, err := fl.pc.WriteTo(b, server); err != nil {
			t.Error(err)
			return
		}
	}
}

func (fl *flooder) ip() string { return fl.pc.LocalAddr().(*net.UDPAddr).IP.String() }

// sendPaced sends n such queries, 16 at a time, each lot once the last is
// held by f or refused: no datagram is lost to a full socket buffer.
func (fl *flooder) sendPaced(t *testing.T, server net.Addr, f *Forwarder, n int) {
	t.Helper()
	base := fl.servfail.Load() + f.slots.Held(fl.ip())
	for sent := 0; sent < n; {
		lot := min(16, n-sent)
		fl.send(t, server, lot)
		sent += lot
		waitFor(t, 5*time.Second, fl.ip()+"'s queries held or refused", func() bool {
			return fl.servfail.Load()+f.slots.Held(fl.ip())-base == int64(sent)
		})
	}
}

// udpAsk asks server one question over UDP from the address from.
func udpAsk(server net.Addr, from, name string) (*dns.Msg, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
	r, _, err := c.Exchange(query(name, dns.TypeA), server.String())
	return r, err
}

// waitFor waits until cond holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
}

// serveLocal serves f on a UDP socket and a TCP listener on 127.0.0.1.
func serveLocal(t *testing.T, f *Forwarder) (*Server, net.Addr) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(f, []net.PacketConn{pc}, []net.Listener{l})
	t.Cleanup(func() { s.Close() })
	return s, pc.LocalAddr()
}

// answeredPromptly fails the test unless a query from from for an
// answered name gets its answer within 100 ms.
func answeredPromptly(t *testing.T, server net.Addr, from, name string) {
	t.Helper()
	start := time.Now()
	r, err := udpAsk(server, from, name)
	took := time.Since(start)
	if err != nil || r.Rcode != dns.RcodeSuccess || firstA(r) != "10.5.5.5" {
		t.Fatalf("%s asking %s: %v %v", from, name, err, r)
	}
	if took > 100*time.Millisecond {
		t.Fatalf("%s's answer took %s", from, took)
	}
}

// One client holding all it may of the slots (its queries to a nameserver
// that drops them wait for it) takes nothing from another: the other's
// query for a name that is answered is answered at once.
func TestOneClientFloodingLeavesOthersTheirDNS(t *testing.T) {
	port := freePort(t)
	droppingUpstream(t, "127.0.0.51", port)
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.51"), port: uint16(port), Try: 6 * time.Second, Budget: 6 * time.Second}
	_, server := serveLocal(t, f)

	// 300 queries: more than every slot (256), as a container asking
	// hundreds of such names a second has.
	a := newFlooder(t, "127.0.0.61")
	a.sendPaced(t, server, f, 300)
	share := DefaultMaxPerClient
	if refused := a.servfail.Load(); refused != int64(300-share) {
		t.Fatalf("%d of the flood's queries refused, want all over its share (%d)", refused, 300-share)
	}
	if held := f.slots.Held("127.0.0.61"); held != int64(share) {
		t.Fatalf("the flooding client holds %d slots, want its share %d", held, share)
	}
	if why := f.Stats().LastFailure.Reason; !strings.Contains(why, "too many queries in flight from 127.0.0.61") {
		t.Fatalf("a refusal's reason: %q", why)
	}
	for range 10 {
		answeredPromptly(t, server, "127.0.0.62", "ok.example")
	}
	// Over TCP too: the same slots, counted by the same address.
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.63")}}}
	if r, _, err := c.Exchange(query("tcp.example", dns.TypeA), server.String()); err != nil || firstA(r) != "10.5.5.5" {
		t.Fatalf("another client over TCP: %v %v", err, r)
	}
	if a.answered.Load() != 0 {
		t.Fatalf("the dropped names were answered %d times", a.answered.Load())
	}
}

// More clients flood at once than the slots have shares for: one that
// asks its first query is still answered (the reserve), and none of them
// takes it.
func TestNewcomerAnsweredWhileManyFlood(t *testing.T) {
	port := freePort(t)
	droppingUpstream(t, "127.0.0.52", port)
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.52"), port: uint16(port), Try: 6 * time.Second, Budget: 6 * time.Second}
	_, server := serveLocal(t, f)
	const clients, each = 12, 64 // 12 > 256/32: their shares are more than the slots
	var floods []*flooder
	var wg sync.WaitGroup
	for i := range clients {
		fl := newFlooder(t, fmt.Sprintf("127.0.1.%d", i+1))
		floods = append(floods, fl)
		wg.Add(1)
		go func() { defer wg.Done(); fl.sendPaced(t, server, f, each) }()
	}
	wg.Wait()
	if used, room := f.slots.Used(), f.slots.Limit-f.slots.Reserve; used < room {
		t.Fatalf("the flood holds %d slots: it did not fill the %d outside the reserve", used, room)
	}
	// None of them takes from the reserve: each holds a query already.
	for _, fl := range floods {
		refused := fl.servfail.Load()
		fl.send(t, server, 1)
		waitFor(t, 5*time.Second, "a flooding client's query refused", func() bool { return fl.servfail.Load() == refused+1 })
	}
	for i := range 5 {
		answeredPromptly(t, server, fmt.Sprintf("127.0.2.%d", i+1), "new.example")
	}
}

// A flood of queries the slots refuse starts no reader beyond the slots
// and a few: goroutines stay bounded however many come.
func TestRefusedQueriesStartNoUnboundedReaders(t *testing.T) {
	port := freePort(t)
	droppingUpstream(t, "127.0.0.53", port)
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.53"), port: uint16(port), MaxInFlight: 8, Try: 6 * time.Second, Budget: 6 * time.Second}
	base := runtime.NumGoroutine()
	_, server := serveLocal(t, f)
	var floods []*flooder
	for i := range 20 {
		floods = append(floods, newFlooder(t, fmt.Sprintf("127.0.3.%d", i+1)))
	}
	clientGoroutines := len(floods) + 1 // their readers, the TCP server
	var most atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			most.Store(max(most.Load(), int64(runtime.NumGoroutine()-base-clientGoroutines)))
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	refused := func() int64 {
		n := int64(0)
		for _, fl := range floods {
			n += fl.servfail.Load()
		}
		return n
	}
	// Hundreds in flight at a time, far over the 8 slots, but no more than
	// the server's socket buffer holds: on a loaded machine a flood sent
	// all at once is mostly lost before the server reads it.
	const window = 400
	sent := int64(0)
	for range 500 {
		for _, fl := range floods {
			fl.send(t, server, 1)
		}
		sent += int64(len(floods))
		for deadline := time.Now().Add(2 * time.Second); sent-refused() > window && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	// The flood reached the server (datagrams beyond its socket's buffer
	// are lost on the way): a thousand refused.
	waitFor(t, 10*time.Second, "the flood refused", func() bool { return refused() >= 1000 })
	close(stop)
	<-sampled
	// The readers (at most the slots and maxIdleReaders more), the looks
	// at the file (the next starts as the last ends) and the sampler.
	if bound := int64(8 + maxIdleReaders + 2 + 1); most.Load() > bound {
		t.Fatalf("%d goroutines at most during the flood, bound %d", most.Load(), bound)
	}
	t.Logf("at most %d goroutines of the server during a flood of 10000 queries over 8 slots", most.Load())
}

// One source holding all the TCP connections it may (and trying for
// every one) keeps no other source's TCP query out; its connections over
// its share are closed at once.
func TestTCPConnectionsFairPerSource(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.54", port, answerA("10.5.5.5"))
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.54"), port: uint16(port)}
	_, server := serveLocal(t, f)
	greedy := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.64")}}
	var conns []net.Conn
	for range maxTCPConns {
		c, err := greedy.Dial("tcp", server.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Each connection is either served (a query on it is answered) or
	// closed by the server; only the share is served.
	var served atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			co := &dns.Conn{Conn: c}
			if co.WriteMsg(query("greedy.example", dns.TypeA)) != nil {
				return
			}
			if r, err := co.ReadMsg(); err == nil && firstA(r) == "10.5.5.5" {
				served.Add(1)
			} else if err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("a greedy connection neither served nor closed: %v", err)
			}
		}()
	}
	wg.Wait()
	if served.Load() != maxTCPConnsPerClient {
		t.Fatalf("%d of the greedy source's connections served, want its share %d", served.Load(), maxTCPConnsPerClient)
	}
	// The greedy source still holds its share (the connections are open,
	// idle): another source's query is answered.
	for i := range 5 {
		c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.0.%d", 65+i))}}}
		start := time.Now()
		if r, _, err := c.Exchange(query("other.example", dns.TypeA), server.String()); err != nil || firstA(r) != "10.5.5.5" {
			t.Fatalf("another source over TCP: %v %v", err, r)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("another source's TCP query took %s", took)
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "reset")
}

package dnsforward

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/miekg/dns"
)

// What a hostile or broken upstream, client or resolver file does to the
// forwarder (found by attacking it): each is answered sensibly and costs
// nothing that lasts.

func udpOnlyUpstream(t *testing.T, addr string, port int, h dns.HandlerFunc) {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go s.ActivateAndServe()
	<-started
	t.Cleanup(func() { s.Shutdown() })
}

func bigTXT(q *dns.Msg, n int) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	for range n {
		rr, _ := dns.NewRR(q.Question[0].Name + ` 60 IN TXT "` + strings.Repeat("x", 200) + `"`)
		r.Answer = append(r.Answer, rr)
	}
	return r
}

// An upstream that sends more over UDP than it was asked for: the answer
// comes over TCP instead of a SERVFAIL.
func TestOversizedUDPAnswerFetchedOverTCP(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.21", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := bigTXT(q, 30) // ~6.5 KB, whatever the size asked
		r.SetEdns0(4096, false)
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.21"), port: uint16(port)}
	q := query("big.example", dns.TypeTXT)
	q.SetEdns0(8192, false)
	if r := f.Answer(context.Background(), q, testClient, false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 30 {
		t.Fatalf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

// A truncated answer from a server without TCP is passed on truncated:
// better than none.
func TestTruncatedAnswerKeptWithoutTCP(t *testing.T) {
	port := freePort(t)
	udpOnlyUpstream(t, "127.0.0.22", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := bigTXT(q, 10)
		r.Truncate(udpSize(q))
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.22"), port: uint16(port)}
	if r := f.Answer(context.Background(), query("tc.example", dns.TypeTXT), testClient, false); r.Rcode != dns.RcodeSuccess || !r.Truncated {
		t.Fatalf("rcode %s, truncated %v", dns.RcodeToString[r.Rcode], r.Truncated)
	}
}

// A resolver file that names the forwarder itself is not followed there:
// one query stays one query, and the file's fault is named.
func TestResolverFileNamingTheForwarderDoesNotLoop(t *testing.T) {
	port := freePort(t)
	pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.23", itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.23"), port: uint16(port), Self: []netip.Addr{netip.MustParseAddr("127.0.0.23")}}
	s := Serve(f, []net.PacketConn{pc}, []net.Listener{l})
	defer s.Close()
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(query("loop.example", dns.TypeA), pc.LocalAddr().String())
	st := f.Stats()
	if err != nil || r.Rcode != dns.RcodeServerFailure || st.Failed+st.Answered != 1 || !strings.Contains(st.FileError, "loop") {
		t.Fatalf("err %v, stats %+v", err, st)
	}
}

// A burst of queries to a silent upstream: readers come for it and go
// after it.
func TestReadersGoAfterABurst(t *testing.T) {
	port := freePort(t)
	silent, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.24", itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	defer silent.Close()
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.24"), port: uint16(port), Try: 300 * time.Millisecond, Budget: 300 * time.Millisecond}
	base := runtime.NumGoroutine()
	s := Serve(f, []net.PacketConn{pc}, nil)
	defer s.Close()
	cl, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer cl.Close()
	for i := range 250 {
		b, _ := query("n"+itoa(i)+".example", dns.TypeA).Pack()
		cl.WriteTo(b, pc.LocalAddr())
	}
	// The burst is read and answered (SERVFAIL once the budget is out, or
	// at once past the cap on queries in flight): the answers are read
	// until none comes for 2 s, the most goroutines seen meanwhile kept.
	answers, peak := 0, 0
	buf := make([]byte, 512)
	for {
		peak = max(peak, runtime.NumGoroutine()-base)
		cl.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := cl.ReadFrom(buf); err != nil {
			break
		}
		answers++
	}
	if answers == 0 || peak <= maxIdleReaders+2 {
		t.Fatalf("the burst: %d answers, at most %d goroutines: no readers came for it", answers, peak)
	}
	t.Logf("the burst: %d answers, at most %d goroutines", answers, peak)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine()-base > maxIdleReaders+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine() - base; n > maxIdleReaders+2 {
		t.Fatalf("%d goroutines stay after the burst", n)
	}
}

// Local names are class IN (or ANY); an EDNS query gets an OPT back.
func TestLocalAnswersKeepClassAndEDNS(t *testing.T) {
	f := &Forwarder{ResolvConf: "/nonexistent", Local: func(name string) ([]netip.Addr, bool) {
		return []netip.Addr{netip.MustParseAddr("172.20.0.1")}, name == "host.docker.internal"
	}}
	q := new(dns.Msg)
	q.Id = 7
	q.Question = []dns.Question{{Name: "host.docker.internal.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}
	if r := f.Answer(context.Background(), q, testClient, false); len(r.Answer) != 0 {
		t.Fatalf("a CHAOS question answered: %v", r.Answer)
	}
	q2 := query("host.docker.internal", dns.TypeA)
	q2.SetEdns0(1232, true)
	if r := f.Answer(context.Background(), q2, testClient, false); r.IsEdns0() == nil || len(r.Answer) != 1 {
		t.Fatalf("an EDNS query's local answer: %v", r)
	}
}

// An error answer without a question (FORMERR, as some servers send) is
// an answer: passed on at once, not waited past.
func TestErrorAnswerWithoutQuestion(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.25", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeFormatError)
		r.Question = nil
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.25"), port: uint16(port)}
	start := time.Now()
	r := f.Answer(context.Background(), query("fe.example", dns.TypeA), testClient, false)
	if r.Rcode != dns.RcodeFormatError || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("%s after %s", dns.RcodeToString[r.Rcode], time.Since(start))
	}
}

// The only server's own REFUSED reaches the client as it is (counted a
// failure).
func TestOnlyServersRefusalPassedOn(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.31", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeRefused)
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.31"), port: uint16(port)}
	if r := f.Answer(context.Background(), query("r.example", dns.TypeA), testClient, false); r.Rcode != dns.RcodeRefused || f.Stats().Failed != 1 {
		t.Fatalf("client got %s, stats %+v", dns.RcodeToString[r.Rcode], f.Stats())
	}
}

// The resolver file read while queries race: told once per change, one at
// a time. In a synctest bubble: a query waits lookWait for a look of the
// bubble's time, which does not pass while the look reads the file, so a
// loaded machine cannot make one look read two rounds' changes.
func TestOnChangeSerialized(t *testing.T) {
	synctest.Test(t, onChangeSerialized)
}

func onChangeSerialized(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	inside, most, calls := 0, 0, 0
	f := &Forwarder{ResolvConf: resolvConf(t, dir, "127.0.0.1"), OnChange: func(Conf) {
		mu.Lock()
		inside++
		calls++
		most = max(most, inside)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inside--
		mu.Unlock()
	}}
	for round := range 20 {
		replaceTarget(t, dir+"/resolv.conf", "127.0.0."+itoa(round+30))
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() { defer wg.Done(); f.Stats() }()
		}
		wg.Wait()
	}
	if most > 1 || calls != 20 {
		t.Fatalf("OnChange: %d calls for 20 changes, up to %d at once", calls, most)
	}
}

// An answer that fits TCP only compressed reaches a TCP client.
func TestLargeTCPAnswerCompressed(t *testing.T) {
	port := freePort(t)
	name := strings.Repeat("a", 60) + ".example."
	startUpstream(t, "127.0.0.26", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for i := range 1000 {
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 10.0." + itoa(i/250) + "." + itoa(i%250))
			r.Answer = append(r.Answer, rr)
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			r.Truncate(udpSize(q))
		}
		r.Compress = true
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.26"), port: uint16(port)}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := Serve(f, nil, []net.Listener{l})
	defer s.Close()
	c := &dns.Client{Net: "tcp", Timeout: 3 * time.Second}
	if r, _, err := c.Exchange(query(name, dns.TypeA), l.Addr().String()); err != nil || len(r.Answer) != 1000 {
		t.Fatalf("TCP client: %v", err)
	}
}

// Sockets to a server no longer named are closed when the file changes.
func TestPoolDropsServersNoLongerNamed(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.27", port, answerA("10.0.0.1"))
	startUpstream(t, "127.0.0.28", port, answerA("10.0.0.2"))
	dir := t.TempDir()
	f := &Forwarder{ResolvConf: resolvConf(t, dir, "127.0.0.27"), port: uint16(port)}
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.Answer(context.Background(), query("a.example", dns.TypeA), testClient, false)
		}()
	}
	wg.Wait()
	replaceTarget(t, dir+"/resolv.conf", "127.0.0.28")
	f.Answer(context.Background(), query("b.example", dns.TypeA), testClient, false)
	f.pool.mu.Lock()
	defer f.pool.mu.Unlock()
	for ap, l := range f.pool.idle {
		if ap.Addr() == netip.MustParseAddr("127.0.0.27") && len(l) > 0 {
			t.Fatalf("%d sockets kept for a server no longer named", len(l))
		}
	}
}

// A line longer than any buffer hides no nameserver after it.
func TestResolverFileLongLine(t *testing.T) {
	if c := ParseConf([]byte("# " + strings.Repeat("x", 70000) + "\nnameserver 10.0.0.1\n")); len(c.Servers) != 1 {
		t.Fatalf("servers: %v", c.Servers)
	}
}

// Close with queries in flight over UDP and TCP returns (they end within
// their budget), and leaves no reader.
func TestCloseWithQueriesInFlight(t *testing.T) {
	port := freePort(t)
	silent, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.29", itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	defer silent.Close()
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	l, _ := net.Listen("tcp", pc.LocalAddr().String())
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.29"), port: uint16(port), Try: 300 * time.Millisecond, Budget: 300 * time.Millisecond}
	s := Serve(f, []net.PacketConn{pc}, []net.Listener{l})
	cl, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer cl.Close()
	for i := range 50 {
		b, _ := query("c"+itoa(i)+".example", dns.TypeA).Pack()
		cl.WriteTo(b, pc.LocalAddr())
	}
	go (&dns.Client{Net: "tcp"}).Exchange(query("t.example", dns.TypeA), l.Addr().String())
	waitFor(t, 5*time.Second, "queries in flight", func() bool { return f.inFlightNow() > 0 })
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

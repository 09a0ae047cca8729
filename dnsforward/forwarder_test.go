package dnsforward

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream is a test nameserver on addr:port, UDP and TCP, answering with
// handle.
type upstream struct {
	udp, tcp *dns.Server
	queries  atomic.Int64
	ids      sync.Map // IDs it was asked with
}

func startUpstream(t *testing.T, addr string, port int, handle func(w dns.ResponseWriter, q *dns.Msg)) *upstream {
	t.Helper()
	u := &upstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		u.queries.Add(1)
		u.ids.Store(q.Id, true)
		handle(w, q)
	})
	pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s:%d (udp): %v", addr, port, err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(addr, itoa(port)))
	if err != nil {
		pc.Close()
		t.Skipf("cannot listen on %s:%d (tcp): %v", addr, port, err)
	}
	u.udp = &dns.Server{PacketConn: pc, Handler: h}
	u.tcp = &dns.Server{Listener: l, Handler: h}
	for _, s := range []*dns.Server{u.udp, u.tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
	}
	t.Cleanup(func() { u.udp.Shutdown(); u.tcp.Shutdown() })
	return u
}

func itoa(n int) string { return strconv.Itoa(n) }

// freePort is a UDP and TCP port free on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func answerA(ip string) func(w dns.ResponseWriter, q *dns.Msg) {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A " + ip)
		r.Answer = append(r.Answer, rr)
		w.WriteMsg(r)
	}
}

// resolvConf writes a resolver file naming servers, through a symlink,
// as WSL has it; it returns the symlink's path.
func resolvConf(t *testing.T, dir string, servers ...string) string {
	t.Helper()
	link := filepath.Join(dir, "resolv.conf")
	replaceTarget(t, link, servers...)
	return link
}

// replaceTarget writes a new target for link and renames it into place,
// as WSL replaces /mnt/wsl/resolv.conf.
func replaceTarget(t *testing.T, link string, servers ...string) {
	t.Helper()
	dir := filepath.Dir(link)
	target := filepath.Join(dir, "target")
	tmp := filepath.Join(dir, "target.new")
	body := "search corp.example\noptions ndots:2 edns0\n"
	for _, s := range servers {
		body += "nameserver " + s + "\n"
	}
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, target); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
}

func query(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	return q
}

// testClient is the source address of the tests' queries that do not
// name their own.
var testClient = netip.MustParseAddr("192.0.2.1")

func ask(t *testing.T, f *Forwarder, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return askFrom(t, f, testClient, name, qtype)
}

func askFrom(t *testing.T, f *Forwarder, from netip.Addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := query(name, qtype)
	r := f.Answer(context.Background(), q, from, false)
	if r == nil {
		t.Fatalf("no answer to %s", name)
	}
	if r.Id != q.Id {
		t.Fatalf("answer ID %d, query ID %d", r.Id, q.Id)
	}
	return r
}

func firstA(r *dns.Msg) string {
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

// A truncated UDP answer is asked again over TCP, and the client gets the
// whole answer under its own ID (the upstream saw another).
func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	port := freePort(t)
	u := startUpstream(t, "127.0.0.1", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			r.Truncated = true
		} else {
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 10.1.2.3")
			r.Answer = append(r.Answer, rr)
		}
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.1"), port: uint16(port)}
	q := query("big.example", dns.TypeA)
	q.Id = 4242
	r := f.Answer(context.Background(), q, testClient, false)
	if r == nil || firstA(r) != "10.1.2.3" || r.Id != 4242 || r.Truncated {
		t.Fatalf("answer: %v", r)
	}
	if u.queries.Load() != 2 {
		t.Fatalf("upstream asked %d times, want UDP then TCP", u.queries.Load())
	}
	if _, seen := u.ids.Load(uint16(4242)); seen {
		t.Log("the upstream saw the client's own ID (a 1 in 65536 coincidence, or no new ID)")
	}
}

// A server nothing listens on, and one that never answers, are passed
// over for the next; the one that answered is asked first next time.
func TestFailoverBetweenServers(t *testing.T) {
	port := freePort(t)
	silent, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.3", itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	defer silent.Close() // bound, never answering: queries to it wait in its buffer
	good := startUpstream(t, "127.0.0.4", port, answerA("10.4.4.4"))
	// 127.0.0.2: nothing listens (refused at once).
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.2", "127.0.0.3", "127.0.0.4"), port: uint16(port), Try: 300 * time.Millisecond}
	start := time.Now()
	if r := ask(t, f, "a.example", dns.TypeA); firstA(r) != "10.4.4.4" {
		t.Fatalf("answer: %v", r)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("failover took %s", took)
	}
	if r := ask(t, f, "b.example", dns.TypeA); firstA(r) != "10.4.4.4" {
		t.Fatalf("answer: %v", r)
	}
	// The silent server's socket holds every query sent to it (on the
	// loopback a datagram is there once its send returned): a.example,
	// and not b.example, the server that answered being asked first. Not
	// timed: a loaded machine can take the 300 ms a try at it costs.
	if asked := queriesHeld(t, silent); !slices.Contains(asked, "a.example.") || slices.Contains(asked, "b.example.") {
		t.Fatalf("the server that answered was not asked first: the silent one was asked %q, want a.example. alone", asked)
	}
	if good.queries.Load() != 2 {
		t.Fatalf("the good server was asked %d times", good.queries.Load())
	}
	if st := f.Stats(); st.Answered != 2 || st.Failed != 0 || len(st.Servers) != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

// queriesHeld are the names of the queries waiting in pc's buffer.
func queriesHeld(t *testing.T, pc net.PacketConn) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 65535)
	for {
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return names
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil || len(m.Question) != 1 {
			t.Fatalf("not a query: %v %v", err, m)
		}
		names = append(names, m.Question[0].Name)
	}
}

// No server answering is SERVFAIL within the budget, not silence, and
// the reason is kept.
func TestNoServerAnswersIsServfail(t *testing.T) {
	port := freePort(t)
	silent, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.5", itoa(port)))
	if err != nil {
		t.Skip(err)
	}
	defer silent.Close()
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.5", "127.0.0.6"), port: uint16(port), Try: time.Second, Budget: 1500 * time.Millisecond}
	start := time.Now()
	r := ask(t, f, "down.example", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("SERVFAIL after %s", took)
	}
	st := f.Stats()
	if st.Failed != 1 || st.LastFailure == nil || st.LastFailure.Name != "down.example." {
		t.Fatalf("stats: %+v", st)
	}
	t.Logf("failure kept: %s", st.LastFailure.Reason)
}

// The resolver file replaced (a new target renamed into place) is
// followed at the next query, with no restart.
func TestResolverFileFollowed(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.7", port, answerA("10.7.7.7"))
	startUpstream(t, "127.0.0.8", port, answerA("10.8.8.8"))
	dir := t.TempDir()
	var changes atomic.Int64
	f := &Forwarder{ResolvConf: resolvConf(t, dir, "127.0.0.7"), port: uint16(port), OnChange: func(Conf) { changes.Add(1) }}
	if r := ask(t, f, "x.example", dns.TypeA); firstA(r) != "10.7.7.7" {
		t.Fatalf("before: %v", r)
	}
	replaceTarget(t, filepath.Join(dir, "resolv.conf"), "127.0.0.8")
	if r := ask(t, f, "x.example", dns.TypeA); firstA(r) != "10.8.8.8" {
		t.Fatalf("after the file was replaced: %v", r)
	}
	if changes.Load() != 2 {
		t.Fatalf("told of %d readings, want 2", changes.Load())
	}
}

// At most MaxInFlight queries are forwarded at once, whoever asks them:
// one more is SERVFAIL at once, not queued.
func TestQueriesInFlightCapped(t *testing.T) {
	port := freePort(t)
	release := make(chan struct{})
	startUpstream(t, "127.0.0.9", port, func(w dns.ResponseWriter, q *dns.Msg) {
		<-release
		answerA("10.9.9.9")(w, q)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.9"), port: uint16(port), MaxInFlight: 2, MaxPerClient: 1}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			askFrom(t, f, netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), "slow.example", dns.TypeA)
		}()
	}
	waitFor(t, 10*time.Second, "two queries in flight", func() bool { return f.inFlightNow() >= 2 })
	// At once: a query queued behind the two would wait out its budget
	// (2.5 s), their answers held until after it. The bound leaves room
	// for the look at the file a query waits for (up to lookWait) and a
	// loaded machine.
	start := time.Now()
	if r := askFrom(t, f, netip.MustParseAddr("192.0.2.20"), "third.example", dns.TypeA); r.Rcode != dns.RcodeServerFailure || time.Since(start) > time.Second {
		t.Fatalf("a query over the cap: %s after %s", dns.RcodeToString[r.Rcode], time.Since(start))
	}
	if why := f.Stats().LastFailure.Reason; !strings.Contains(why, "too many queries in flight") {
		t.Fatalf("the refusal's reason: %q", why)
	}
	close(release)
	wg.Wait()
}

// Local names are answered without asking anyone: their addresses of the
// asked family, or NOERROR with no answer (never NXDOMAIN).
func TestLocalNames(t *testing.T) {
	f := &Forwarder{ResolvConf: "/nonexistent", Local: func(name string) ([]netip.Addr, bool) {
		if name == "host.docker.internal" {
			return []netip.Addr{netip.MustParseAddr("172.20.0.1")}, true
		}
		return nil, false
	}}
	if r := ask(t, f, "Host.Docker.Internal", dns.TypeA); firstA(r) != "172.20.0.1" || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("A: %v", r)
	}
	for _, qt := range []uint16{dns.TypeAAAA, dns.TypeMX, dns.TypeHTTPS} {
		if r := ask(t, f, "host.docker.internal", qt); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Fatalf("%s: %v", dns.TypeToString[qt], r)
		}
	}
	// Not local, and no resolver file: SERVFAIL naming why.
	if r := ask(t, f, "elsewhere.example", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no resolver file: %v", r)
	}
	if st := f.Stats(); st.FileError == "" {
		t.Fatalf("stats do not say the file is missing: %+v", st)
	}
}

// Over a real socket: the server answers UDP and TCP clients, and cuts an
// answer too big for a UDP client's size, marked truncated.
func TestServeOverSockets(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.10", port, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for i := range 60 {
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 10.10.0." + itoa(i+1))
			r.Answer = append(r.Answer, rr)
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			r.Truncate(udpSize(q)) // as a real server cuts to the asker's size
		}
		w.WriteMsg(r)
	})
	f := &Forwarder{ResolvConf: resolvConf(t, t.TempDir(), "127.0.0.10"), port: uint16(port)}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(f, []net.PacketConn{pc}, []net.Listener{l})
	defer s.Close()
	udp := &dns.Client{Net: "udp"}
	r, _, err := udp.Exchange(query("many.example", dns.TypeA), pc.LocalAddr().String())
	if err != nil || !r.Truncated || len(r.Answer) >= 60 {
		t.Fatalf("over UDP (512 bytes): err %v, truncated %v, %d answers, %s, failure %+v", err, r != nil && r.Truncated, len(r.Answer), dns.RcodeToString[r.Rcode], f.Stats().LastFailure)
	}
	tcp := &dns.Client{Net: "tcp"}
	r, _, err = tcp.Exchange(query("many.example", dns.TypeA), l.Addr().String())
	if err != nil || len(r.Answer) != 60 {
		t.Fatalf("over TCP: %v %v", err, r)
	}
}

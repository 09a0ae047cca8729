package dnsforward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/miekg/dns"
	"github.com/sirupsen/logrus"
)

// Defaults for a Forwarder's limits.
const (
	// DefaultTry bounds one query to one server: a server that does not
	// answer in this time is passed over for the next.
	DefaultTry = time.Second
	// DefaultBudget bounds a query through every server: then SERVFAIL.
	// Under the C libraries' own 5 s timeout, so the client hears SERVFAIL
	// rather than giving up on silence.
	DefaultBudget = 2500 * time.Millisecond
	// DefaultMaxInFlight caps the queries forwarded at once, for all
	// clients: each holds a socket and a goroutine for up to the budget.
	DefaultMaxInFlight = 256
	// DefaultMaxPerClient is what one client (a source address: a
	// container, or dockerd's embedded DNS asking for one) may have in
	// flight: a resolver asks one name at a time per thread (A and AAAA
	// together), so 32 is a busy program's thousands of names a second
	// against a nameserver that answers in milliseconds. Only against one
	// that drops queries (1–2.5 s each) is it reached — the flood that
	// must not take every other container's DNS.
	DefaultMaxPerClient = DefaultMaxInFlight / 8
	// DefaultReserve is the part of the slots a client that already has a
	// query in flight may not take: 7 flooding clients at their share
	// (224) leave 32, so however many flood at once, one that asks its
	// first query is served.
	DefaultReserve = DefaultMaxInFlight / 8
)

// Forwarder answers DNS queries: local names itself, the rest through the
// resolver file's nameservers.
type Forwarder struct {
	// ResolvConf is the resolver file whose nameservers are asked. It is
	// looked at for every query and read again when it changed (a new
	// target of a symlink, a rewrite): no restart follows a VPN. A query
	// never waits on it long (see look.go); while it cannot be read, its
	// last reading stays in force.
	ResolvConf string
	// Local answers the names ddinit gives meaning to. ok=false: not a
	// local name, forward it. A local name with no address of the asked
	// family has an empty answer (NOERROR), never NXDOMAIN.
	Local func(name string) (addrs []netip.Addr, ok bool)
	// OnChange is told each new reading of the resolver file, one at a
	// time, in order (by the goroutine that looks at the file: no query
	// waits for it).
	OnChange func(Conf)
	// Self are the addresses the forwarder listens on: a resolver file
	// that names one of them is not followed there (a query would loop
	// through every slot).
	Self []netip.Addr
	// Try, Budget: the defaults when zero.
	Try, Budget time.Duration
	// MaxInFlight caps the queries forwarded at once; MaxPerClient what
	// one client (a source address) may have of them; Reserve the part
	// only a client with none in flight may take. Zero: the defaults for
	// 256, and MaxInFlight/8 for the other two when MaxInFlight is set.
	MaxInFlight, MaxPerClient, Reserve int
	Log                                logrus.FieldLogger

	// port the servers are asked on: 53, but for tests, which cannot bind
	// it unprivileged.
	port uint16
	// statFile and readFile look at the resolver file: statFile and
	// ReadFile, but for tests that play a file system that never answers.
	statFile func(path string) fileID
	readFile func(path string) ([]byte, error)

	mu        sync.Mutex
	file      fileState
	answered  atomic.Uint64
	failed    atomic.Uint64
	failure   atomic.Pointer[Failure]
	slots     *fairshare.Pool
	overShare atomic.Int64 // when a client over its share was last logged (unix ns)
	once      sync.Once
	pool      udpPool
}

// Failure is the last query no server answered.
type Failure struct {
	Name   string    `json:"name"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Stats is what a Forwarder has done.
type Stats struct {
	Servers     []string `json:"servers"`
	Answered    uint64   `json:"answered"`
	Failed      uint64   `json:"failed"`
	LastFailure *Failure `json:"lastFailure,omitempty"`
	// FileError says why the resolver file could not be read.
	FileError string `json:"fileError,omitempty"`
}

// Stats returns the counts and the servers in use (the file is looked at
// again first, as a query looks at it: never waiting long for a file
// system that does not answer).
func (f *Forwarder) Stats() Stats {
	conf, _ := f.current()
	st := Stats{Answered: f.answered.Load(), Failed: f.failed.Load(), LastFailure: f.failure.Load()}
	for _, s := range conf.Servers {
		st.Servers = append(st.Servers, s.Addr().String())
	}
	f.mu.Lock()
	st.FileError = f.fileError()
	f.mu.Unlock()
	return st
}

func (f *Forwarder) init() {
	f.once.Do(func() {
		limit, share, reserve := int64(DefaultMaxInFlight), int64(DefaultMaxPerClient), int64(DefaultReserve)
		if f.MaxInFlight > 0 {
			limit = int64(f.MaxInFlight)
			share, reserve = max(1, limit/8), limit/8
		}
		if f.MaxPerClient > 0 {
			share = int64(f.MaxPerClient)
		}
		if f.Reserve > 0 {
			reserve = int64(f.Reserve)
		}
		f.slots = &fairshare.Pool{Limit: limit, Share: share, Reserve: reserve}
		if f.Log == nil {
			quiet := logrus.New()
			quiet.Out = io.Discard
			f.Log = quiet
		}
		if f.statFile == nil {
			f.statFile = statFile
		}
		if f.readFile == nil {
			f.readFile = ReadFile
		}
	})
}

func sameConf(a, b Conf) bool {
	if len(a.Servers) != len(b.Servers) || len(a.Shaping) != len(b.Shaping) {
		return false
	}
	for i := range a.Servers {
		if a.Servers[i] != b.Servers[i] {
			return false
		}
	}
	for i := range a.Shaping {
		if a.Shaping[i] != b.Shaping[i] {
			return false
		}
	}
	return true
}

// ServeDNS implements dns.Handler (for TCP: UDP is served by Serve's own
// readers).
func (f *Forwarder) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	f.init()
	resp := f.Answer(context.Background(), q, addrOf(w.RemoteAddr()), w.LocalAddr().Network() == "tcp")
	if resp == nil {
		return
	}
	resp.Compress = true // what fits 64 KB compressed is sent
	if err := w.WriteMsg(resp); err != nil {
		f.failed.Add(1)
		f.failure.Store(&Failure{Name: q.Question[0].Name, Reason: "the answer could not be sent: " + err.Error(), At: time.Now()})
	}
}

func udpSize(q *dns.Msg) int {
	if o := q.IsEdns0(); o != nil {
		return int(max(o.UDPSize(), dns.MinMsgSize))
	}
	return dns.MinMsgSize
}

// addrOf is the address of a client's socket address: its IP, an IPv4
// one as such even when it came over an IPv6 socket.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}

// Answer answers one query from the client at address from (its source
// address: what it may have in flight is counted per address): nil only
// for a message that is no query.
func (f *Forwarder) Answer(ctx context.Context, q *dns.Msg, from netip.Addr, overTCP bool) *dns.Msg {
	f.init()
	if q.Response || q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		if q.Response {
			return nil
		}
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeNotImplemented)
		if len(q.Question) != 1 {
			r.SetRcode(q, dns.RcodeFormatError)
		}
		return r
	}
	question := q.Question[0]
	if f.Local != nil && (question.Qclass == dns.ClassINET || question.Qclass == dns.ClassANY) {
		if addrs, ok := f.Local(strings.ToLower(strings.TrimSuffix(question.Name, "."))); ok {
			f.answered.Add(1)
			return localAnswer(q, addrs)
		}
	}
	client := from.Unmap().String()
	if why := f.slots.TakeWhy(client, 1); why != fairshare.Granted {
		return f.fail(q, f.refused(from, why))
	}
	defer f.slots.Give(client, 1)
	resp, reason := f.forward(ctx, q)
	if reason != "" {
		r := f.fail(q, reason)
		if resp != nil {
			return resp
		}
		return r
	}
	f.answered.Add(1)
	return resp
}

// refused says why a client's query gets no slot, and logs a client over
// its share (at most every 10 s: a flood would flood the log too).
func (f *Forwarder) refused(from netip.Addr, why fairshare.Refusal) string {
	if why == fairshare.Full {
		return fmt.Sprintf("too many queries in flight from all clients (at most %d)", f.slots.Limit)
	}
	now := time.Now().UnixNano()
	if last := f.overShare.Load(); now-last >= int64(10*time.Second) && f.overShare.CompareAndSwap(last, now) {
		f.Log.WithFields(logrus.Fields{"client": from.String(), "share": f.slots.Share}).Warn("a DNS client has its share of the queries in flight (its nameserver is slow or drops them): its further queries are SERVFAIL until some are answered; other clients are not held up")
	}
	return fmt.Sprintf("too many queries in flight from %s (its share: %d)", from, f.slots.Share)
}

// fail answers SERVFAIL and keeps why.
func (f *Forwarder) fail(q *dns.Msg, reason string) *dns.Msg {
	f.failed.Add(1)
	f.failure.Store(&Failure{Name: q.Question[0].Name, Reason: reason, At: time.Now()})
	r := new(dns.Msg)
	r.SetRcode(q, dns.RcodeServerFailure)
	r.RecursionAvailable = true
	return r
}

// localAnswer answers a local name with its addresses of the asked type.
func localAnswer(q *dns.Msg, addrs []netip.Addr) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.Authoritative = true
	r.RecursionAvailable = true
	question := q.Question[0]
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: question.Name, Class: dns.ClassINET, Ttl: 0}
		switch {
		case a.Is4() && (question.Qtype == dns.TypeA || question.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			r.Answer = append(r.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case a.Is6() && (question.Qtype == dns.TypeAAAA || question.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	if o := q.IsEdns0(); o != nil {
		// An EDNS query gets an OPT back (RFC 6891 6.1.1).
		r.SetEdns0(max(o.UDPSize(), dns.MinMsgSize), o.Do())
	}
	return r
}

// forward asks the servers in turn (the last one that answered first)
// until one answers, within the budget; it returns the answer, or why
// there is none — with, when a server failed the query itself, that
// server's answer.
func (f *Forwarder) forward(ctx context.Context, q *dns.Msg) (*dns.Msg, string) {
	conf, why := f.current()
	if len(conf.Servers) == 0 {
		return nil, why
	}
	budget := cmpOr(f.Budget, DefaultBudget)
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	f.mu.Lock()
	first := f.file.lastGood
	f.mu.Unlock()
	var reasons []string
	var failed *dns.Msg // a server's own SERVFAIL or REFUSED, kept if none answers
	for i := range conf.Servers {
		if ctx.Err() != nil {
			reasons = append(reasons, "no answer within "+budget.String())
			break
		}
		n := (first + i) % len(conf.Servers)
		server := conf.Servers[n]
		if f.port != 0 {
			server = netip.AddrPortFrom(server.Addr(), f.port)
		}
		resp, err := f.exchange(ctx, q, server)
		if err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %s", server.Addr(), shortErr(err)))
			continue
		}
		// A server that fails the query itself is passed over, as the C
		// libraries pass over it; its answer is kept if no other answers.
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			reasons = append(reasons, fmt.Sprintf("%s: %s", server.Addr(), dns.RcodeToString[resp.Rcode]))
			failed = resp
			continue
		}
		f.mu.Lock()
		if sameConf(f.file.conf, conf) {
			f.file.lastGood = n
		}
		f.mu.Unlock()
		return resp, ""
	}
	// A server's own verdict is passed on as it came (still a failure).
	return failed, strings.Join(reasons, "; ")
}

// exchange asks one server: over UDP, again over TCP when the answer was
// truncated; the query's ID is the proxy's own upstream, the client's
// on the way back.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, server netip.AddrPort) (*dns.Msg, error) {
	try := cmpOr(f.Try, DefaultTry)
	out := q.Copy()
	out.Id = dns.Id()
	// Answers up to 1232 bytes in one UDP datagram (the size DNS Flag Day
	// 2020 settled on: no fragments), larger ones over TCP; the client's
	// own size limit is applied on the way back.
	if o := out.IsEdns0(); o == nil {
		out.SetEdns0(upstreamUDPSize, false)
	} else if o.UDPSize() > upstreamUDPSize {
		o.SetUDPSize(upstreamUDPSize)
	}
	resp, err := f.pool.exchange(ctx, out, server, try)
	var ne net.Error
	if err != nil && !errors.As(err, &ne) && !errors.Is(err, syscall.ECONNREFUSED) {
		// Not silence nor refusal: an answer that did not parse (larger
		// than asked for, cut short). TCP carries it whole.
		resp, err = exchangeTCP(ctx, out, server, try)
	} else if err == nil && resp.Truncated {
		// A server without TCP: the truncated answer is better than none
		// (the client sees TC and decides).
		if full, terr := exchangeTCP(ctx, out, server, try); terr == nil {
			resp = full
		}
	}
	if err != nil {
		return nil, err
	}
	resp.Id = q.Id
	if q.IsEdns0() == nil {
		// The client did not speak EDNS: it gets no OPT record back.
		kept := resp.Extra[:0]
		for _, rr := range resp.Extra {
			if rr.Header().Rrtype != dns.TypeOPT {
				kept = append(kept, rr)
			}
		}
		resp.Extra = kept
	}
	return resp, nil
}

// exchangeTCP asks over a connection of its own (truncated answers are
// rare: no pool).
func exchangeTCP(ctx context.Context, q *dns.Msg, server netip.AddrPort, try time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, try)
	defer cancel()
	c := &dns.Client{Net: "tcp", Timeout: try}
	resp, _, err := c.ExchangeContext(ctx, q, server.String())
	if err != nil {
		return nil, err
	}
	if !answers(resp, q) {
		return nil, errors.New("an answer to another question")
	}
	return resp, nil
}

// answers reports whether r is the answer to q: its ID and its question
// (an error answer may come without the question: FORMERR, NOTIMP).
func answers(r, q *dns.Msg) bool {
	if r.Id != q.Id {
		return false
	}
	if len(r.Question) == 0 {
		return r.Rcode != dns.RcodeSuccess
	}
	return len(r.Question) == 1 && strings.EqualFold(r.Question[0].Name, q.Question[0].Name) &&
		r.Question[0].Qtype == q.Question[0].Qtype && r.Question[0].Qclass == q.Question[0].Qclass
}

// upstreamUDPSize is the EDNS size the forwarder asks servers for.
const upstreamUDPSize = 1232

func shortErr(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "no answer"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there"
	}
	return err.Error()
}

func cmpOr(d, otherwise time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return otherwise
}

func (f *Forwarder) inFlightNow() int { f.init(); return int(f.slots.Used()) }

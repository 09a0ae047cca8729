// dnsflood asks SERVER for RATE new names a second under DOMAIN for
// SECONDS, never waiting for answers (a container resolving many names of
// a domain whose nameserver drops queries), and prints each second what
// came back so far: "sent N fast-servfail F servfail S other O", a
// SERVFAIL being fast when it came within 100 ms of its query (the
// forwarder refusing it at once, not giving up on a silent nameserver).
// The DNS fairness test runs it inside a container.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: dnsflood SERVER DOMAIN RATE SECONDS")
		os.Exit(2)
	}
	rate, _ := strconv.Atoi(os.Args[3])
	seconds, _ := strconv.Atoi(os.Args[4])
	c, err := net.Dial("udp", net.JoinHostPort(os.Args[1], "53"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	co := &dns.Conn{Conn: c}
	var mu sync.Mutex
	sentAt := map[uint16]time.Time{}
	var sent, fast, servfail, other int
	go func() {
		for {
			r, err := co.ReadMsg()
			if err != nil {
				continue
			}
			mu.Lock()
			at, ok := sentAt[r.Id]
			delete(sentAt, r.Id)
			switch {
			case !ok:
			case r.Rcode == dns.RcodeServerFailure && time.Since(at) < 100*time.Millisecond:
				fast++
			case r.Rcode == dns.RcodeServerFailure:
				servfail++
			default:
				other++
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	report := time.Now().Add(time.Second)
	for end := time.Now().Add(time.Duration(seconds) * time.Second); time.Now().Before(end); <-tick.C {
		q := new(dns.Msg)
		mu.Lock()
		q.SetQuestion(fmt.Sprintf("n%d.%s.", sent, os.Args[2]), dns.TypeA)
		sentAt[q.Id] = time.Now()
		sent++
		mu.Unlock()
		co.WriteMsg(q)
		if time.Now().After(report) {
			report = report.Add(time.Second)
			mu.Lock()
			fmt.Printf("sent %d fast-servfail %d servfail %d other %d\n", sent, fast, servfail, other)
			mu.Unlock()
		}
	}
}

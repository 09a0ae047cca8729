// dnsprobe asks SERVER the same question N times, one after another, over
// UDP, and prints the median and the 90th percentile round trip in
// microseconds: the DNS benchmark runs it inside a container.
package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: dnsprobe SERVER NAME N")
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Args[3])
	c, err := net.Dial("udp", net.JoinHostPort(os.Args[1], "53"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	co := &dns.Conn{Conn: c}
	var took []time.Duration
	for range n {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(os.Args[2]), dns.TypeA)
		start := time.Now()
		c.SetDeadline(start.Add(5 * time.Second))
		if err := co.WriteMsg(q); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		r, err := co.ReadMsg()
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			fmt.Fprintln(os.Stderr, "no answer:", err, r)
			os.Exit(1)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	fmt.Println(took[len(took)/2].Microseconds(), took[len(took)*9/10].Microseconds())
}

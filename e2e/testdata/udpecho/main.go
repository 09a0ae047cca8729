// udpecho answers every datagram on [HOST]:PORT with "echo: " and the
// datagram: a UDP server for the published-ports and host-network tests,
// built static and copied into a busybox container (whose nc has no UDP).
// A bare PORT listens on every address of both families; an IPv4 HOST
// on that family only.
package main

import (
	"net"
	"net/netip"
	"os"
	"strings"
)

func main() {
	addr, network := os.Args[1], "udp"
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is4() {
		network = "udp4" // Go would listen on [::] for 0.0.0.0
	}
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		panic(err)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		c.WriteTo(append([]byte("echo: "), buf[:n]...), from)
	}
}

// udpecho answers every datagram on :PORT with "echo: " and the datagram:
// a UDP server for the published-ports test, built static and copied into
// a busybox container (whose nc has no UDP).
package main

import (
	"net"
	"os"
)

func main() {
	c, err := net.ListenPacket("udp", ":"+os.Args[1])
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

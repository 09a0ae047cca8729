package dockerproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// BenchmarkProxyPing: _ping over keep-alive connections through the proxy
// to a real net/http server (profile with -cpuprofile).
func BenchmarkProxyPing(b *testing.B) {
	sock := serveProxy(b, quietProxy(framingEngine(b)))
	const conns = 32
	var wg sync.WaitGroup
	per := b.N/conns + 1
	b.ResetTimer()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", sock)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for range per {
				io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: Docker-Client/20.10.24 (linux)\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// BenchmarkProxyUpload: a chunked upload (as the docker CLI sends `docker
// cp` and a build context) through the proxy to a real net/http server,
// in chunks of each size, the bytes per second reported.
func BenchmarkProxyUpload(b *testing.B) {
	sock := serveProxy(b, quietProxy(framingEngine(b)))
	for _, chunk := range []int{32 << 10, 64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk-%dK", chunk>>10), func(b *testing.B) {
			c, err := net.Dial("unix", sock)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			data := make([]byte, chunk)
			const perUpload = 64 << 20
			b.SetBytes(perUpload)
			for b.Loop() {
				go func() {
					bw := bufio.NewWriterSize(c, 4<<10) // as Go's client writes
					io.WriteString(bw, "PUT /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n")
					for sent := 0; sent < perUpload; sent += chunk {
						fmt.Fprintf(bw, "%x\r\n", chunk)
						bw.Write(data)
						io.WriteString(bw, "\r\n")
					}
					io.WriteString(bw, "0\r\n\r\n")
					bw.Flush()
				}()
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// TestBenchForwarder is `make bench` for the forwarder: the same hop made
// by ddinit's forwarder and by socat, measured in one run. It runs only
// when DDINIT_BENCH=1.
func TestBenchForwarder(t *testing.T) {
	requireBench(t)
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatal("socat is missing (make deps installs it)")
	}
	dir, err := os.MkdirTemp("/tmp", "fwd-bench-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Targets: a sink that counts bytes, and an HTTP server with /_ping.
	sinkPath, httpPath := filepath.Join(dir, "sink.sock"), filepath.Join(dir, "http.sock")
	sink, _ := net.Listen("unix", sinkPath)
	defer sink.Close()
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d", n)
				c.Close()
			}()
		}
	}()
	hl, _ := net.Listen("unix", httpPath)
	defer hl.Close()
	go http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") }))

	hop := func(name, target string) (string, func()) {
		front := filepath.Join(dir, name+"-"+filepath.Base(target))
		switch name {
		case "ddinit":
			a, _ := transport.Parse("unix://" + front)
			l, err := transport.Listen(a)
			if err != nil {
				t.Fatal(err)
			}
			f := &transport.Forwarder{Listener: l, Log: logrus.New(), Dial: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", target)
			}}
			go f.Serve(context.Background())
			return front, func() { l.Close() }
		default:
			os.Remove(front)
			// A strong baseline: socat with 256 KB buffers, not its 8 KB default.
			cmd := exec.Command("socat", "-b", "262144", "UNIX-LISTEN:"+front+",fork", "UNIX-CONNECT:"+target)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 500; i++ {
				if c, err := net.Dial("unix", front); err == nil {
					c.Close()
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			return front, func() { cmd.Process.Kill(); cmd.Wait() }
		}
	}

	const total = 1 << 30
	throughput := func(sock string) time.Duration {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		start := time.Now()
		for sent := 0; sent < total; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		c.(*net.UnixConn).CloseWrite()
		reply, _ := io.ReadAll(c)
		if string(reply) != fmt.Sprint(total) {
			t.Fatalf("sink got %s bytes, want %d", reply, total)
		}
		return time.Since(start)
	}
	latency := func(sock string) (time.Duration, time.Duration) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var d []time.Duration
		for i := 0; i < 10000; i++ {
			start := time.Now()
			io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100]
	}

	results := map[string][3]time.Duration{}
	for round := 0; round < 2; round++ { // alternate, keep the second round
		for _, name := range []string{"ddinit", "socat"} {
			s1, stop1 := hop(name, sinkPath)
			tp := throughput(s1)
			stop1()
			s2, stop2 := hop(name, httpPath)
			med, p99 := latency(s2)
			stop2()
			results[name] = [3]time.Duration{tp, med, p99}
		}
	}
	d, s := results["ddinit"], results["socat"]
	t.Logf("BENCH forwarder throughput, 1 GB over unix sockets: ddinit %.2f GB/s, socat -b 262144 %.2f GB/s, ratio %.2f (target >= 1)",
		float64(total)/d[0].Seconds()/1e9, float64(total)/s[0].Seconds()/1e9, s[0].Seconds()/d[0].Seconds())
	t.Logf("BENCH forwarder latency, 10 000 _ping on one connection: ddinit median %v p99 %v, socat median %v p99 %v, median ratio %.2f (target <= 1)",
		d[1], d[2], s[1], s[2], float64(d[1])/float64(s[1]))
}

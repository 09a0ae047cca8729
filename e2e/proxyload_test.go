package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// pingLoad opens streams event streams on sock, then conns keep-alive
// connections that each send n _ping requests in turn, and returns the
// requests answered per second.
func pingLoad(t *testing.T, sock string, conns, n, streams int) float64 {
	t.Helper()
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range streams {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /events HTTP/1.1\r\nHost: docker\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatalf("an event stream: %v", err)
		}
		open = append(open, c)
	}
	var dialed []net.Conn
	for range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		dialed = append(dialed, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	for _, c := range dialed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			br := bufio.NewReader(c)
			for range n {
				if _, err := io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatalf("a ping under load: %v", err)
	}
	return float64(conns*n) / took.Seconds()
}

// runBatch runs count `docker run -d` through sock, parallel at a time,
// and returns how long they took.
func runBatch(t *testing.T, sock string, count, parallel int, tag string) time.Duration {
	t.Helper()
	var wg sync.WaitGroup
	work := make(chan int, count)
	for i := range count {
		work <- i
	}
	close(work)
	errs := make(chan error, count)
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cmd := exec.Command("docker", "run", "-d", "--label", "bench="+tag, "busybox:local", "sleep", "3600")
				cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+sock, "DOCKER_CLI_HINTS=false")
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("docker run %d: %v %s", i, err, out)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return took
}

// TestBenchProxyUnderLoad is `make bench` for the docker API proxy under
// concurrency, against dockerd's own socket with the same clients in the
// same run: _ping throughput over 500 keep-alive connections beside 100
// event streams, and `docker run -d` ×200, eight at a time, in batches
// taken in turn.
func TestBenchProxyUnderLoad(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") == "" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	requireEnvironment(t)
	in := start(t, options{extra: asDeployed})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	direct := fmt.Sprintf("/proc/%d/root/run/docker.sock", in.pid1())
	sockets := map[string]string{"proxy": in.sock, "direct": direct}

	best := map[string]float64{}
	for _, name := range []string{"direct", "proxy", "direct", "proxy", "direct", "proxy"} {
		if r := pingLoad(t, sockets[name], 500, 20, 100); r > best[name] {
			best[name] = r
		}
	}
	t.Logf("BENCH docker API proxy, _ping over 500 keep-alive connections x 20 beside 100 event streams: proxy %.0f/s, dockerd's own socket %.0f/s, ratio %.2f (target >= 0.95)",
		best["proxy"], best["direct"], best["proxy"]/best["direct"])

	took := map[string]time.Duration{}
	for round := range 5 {
		for _, name := range []string{"direct", "proxy"} {
			took[name] += runBatch(t, sockets[name], 40, 8, fmt.Sprintf("%s-%d", name, round))
		}
	}
	t.Logf("BENCH docker API proxy, docker run -d x200 (8 at a time, batches of 40 in turn): proxy %s, dockerd's own socket %s, ratio %.2f (target <= 1.05)",
		took["proxy"].Round(time.Millisecond), took["direct"].Round(time.Millisecond), took["proxy"].Seconds()/took["direct"].Seconds())
	cleanup := exec.Command("sh", "-c", "docker rm -f $(docker ps -aq --filter label=bench) >/dev/null")
	cleanup.Env = append(os.Environ(), "DOCKER_HOST=unix://"+direct)
	cleanup.Run()
}

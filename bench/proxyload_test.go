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
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// TestPlainForwarderProcess is not a test: run by TestBenchProxyUnderLoad
// as a process of its own (as ddinit run is), it passes bytes from the
// socket PLAIN_FORWARD_LISTEN to PLAIN_FORWARD_TARGET and nothing else
// (ddinit's byte forwarder), until killed: the cost of the hop alone.
func TestPlainForwarderProcess(t *testing.T) {
	listen, target := os.Getenv("PLAIN_FORWARD_LISTEN"), os.Getenv("PLAIN_FORWARD_TARGET")
	if listen == "" {
		t.Skip("a helper process of TestBenchProxyUnderLoad")
	}
	l, err := net.Listen("unix", listen)
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.Out = io.Discard
	f := &transport.Forwarder{Listener: l, Log: quiet, Dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", target)
	}}
	f.Serve(context.Background())
}

// startPlainForwarder runs TestPlainForwarderProcess in a process of its
// own, forwarding a new socket to target, and returns the socket and the
// process.
func startPlainForwarder(t *testing.T, dir, target string) (string, int) {
	t.Helper()
	sock := filepath.Join(dir, "plain.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPlainForwarderProcess$")
	cmd.Env = append(os.Environ(), "PLAIN_FORWARD_LISTEN="+sock, "PLAIN_FORWARD_TARGET="+target)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	harness.WaitUntil(t, 10*time.Second, "the plain forwarder's socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return sock, cmd.Process.Pid
}

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
// event streams (and a plain byte forwarder's on the same hop), and
// `docker run -d` ×200, eight at a time, in batches taken in ABBA turns.
func TestBenchProxyUnderLoad(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{Extra: asDeployed})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	direct := fmt.Sprintf("/proc/%d/root/run/docker.sock", in.Pid1())
	plain, plainPID := startPlainForwarder(t, t.TempDir(), direct)
	sockets := map[string]string{"proxy": in.Sock, "direct": direct, "plain": plain}
	// The processes whose CPU each side costs besides the client's: the
	// engine's, and the hop's (ddinit run is the proxy's process).
	dockerd := harness.FindComm(in.PidNS(), "dockerd")[0]
	hop := map[string]int{"proxy": in.Pid(), "plain": plainPID}

	// The plain forwarder, in a process of its own as ddinit run is, makes
	// the same hop and only passes bytes: what the hop alone costs. Each
	// side's CPU per request says where the time goes.
	const rounds, conns, each = 3, 500, 20
	best := map[string]float64{}
	type cpu struct{ client, engine, hopUser, hopSys int }
	used := map[string]cpu{}
	for range rounds {
		for _, name := range []string{"direct", "proxy", "plain"} {
			client0, engine0 := harness.CPUTicks(t, os.Getpid()), harness.CPUTicks(t, dockerd)
			var user0, sys0 int
			if pid := hop[name]; pid != 0 {
				user0, sys0 = harness.CPUSplit(t, pid)
			}
			if r := pingLoad(t, sockets[name], conns, each, 100); r > best[name] {
				best[name] = r
			}
			u := used[name]
			u.client += harness.CPUTicks(t, os.Getpid()) - client0
			u.engine += harness.CPUTicks(t, dockerd) - engine0
			if pid := hop[name]; pid != 0 {
				user, sys := harness.CPUSplit(t, pid)
				u.hopUser += user - user0
				u.hopSys += sys - sys0
			}
			used[name] = u
		}
	}
	// µs of CPU per request, from clock ticks (USER_HZ, 100 a second).
	perRequest := func(ticks int) float64 { return float64(ticks) * 1e4 / (rounds * conns * each) }
	t.Logf("BENCH docker API proxy, _ping over 500 keep-alive connections x 20 beside 100 event streams: proxy %.0f/s, dockerd's own socket %.0f/s, ratio %.2f (target >= 0.95); a plain byte forwarder on the same hop %.0f/s (%.2f)",
		best["proxy"], best["direct"], best["proxy"]/best["direct"], best["plain"], best["plain"]/best["direct"])
	t.Logf("BENCH docker API proxy, CPU per _ping: the client %.1f µs direct, dockerd %.1f µs direct and %.1f µs behind the proxy; the proxy %.1f µs (%.1f in the kernel); the plain forwarder %.1f µs (%.1f in the kernel)",
		perRequest(used["direct"].client), perRequest(used["direct"].engine), perRequest(used["proxy"].engine),
		perRequest(used["proxy"].hopUser+used["proxy"].hopSys), perRequest(used["proxy"].hopSys),
		perRequest(used["plain"].hopUser+used["plain"].hopSys), perRequest(used["plain"].hopSys))

	// The containers stay (each batch's run on a busier engine than the
	// last): the batches go in turn in ABBA order, so that each side runs
	// first as often and meets as many containers already running.
	took := map[string]time.Duration{}
	for round := range 10 {
		order := []string{"direct", "proxy"}
		if round%4 == 1 || round%4 == 2 {
			order = []string{"proxy", "direct"}
		}
		for _, name := range order {
			took[name] += runBatch(t, sockets[name], 20, 8, fmt.Sprintf("%s-%d", name, round))
		}
	}
	t.Logf("BENCH docker API proxy, docker run -d x200 (8 at a time, batches of 20 in ABBA turns): proxy %s, dockerd's own socket %s, ratio %.2f (target <= 1.05)",
		took["proxy"].Round(time.Millisecond), took["direct"].Round(time.Millisecond), took["proxy"].Seconds()/took["direct"].Seconds())
	cleanup := exec.Command("sh", "-c", "docker rm -f $(docker ps -aq --filter label=bench) >/dev/null")
	cleanup.Env = append(os.Environ(), "DOCKER_HOST=unix://"+direct)
	cleanup.Run()
}

package dockerproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/fairshare"
	"github.com/sirupsen/logrus"
)

// framingEngine is a real net/http server standing in for dockerd, with
// the answers the framing tests need.
func framingEngine(t testing.TB) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("POST /{version}/containers/create", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%d %s", len(b), r.Header.Get("Expect"))
	})
	mux.HandleFunc("PUT /upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	mux.HandleFunc("PUT /refuse", func(w http.ResponseWriter, r *http.Request) {
		// Refused before the body is read, as dockerd refuses an archive
		// for a container it does not know.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such container: nosuch"}`)
	})
	mux.HandleFunc("GET /registry-config", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", len(r.Header.Get("X-Registry-Config")))
	})
	mux.HandleFunc("GET /hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	return serveEngine(t, mux)
}

func quietProxy(engineSock string) *Proxy {
	quiet := logrus.New()
	quiet.Out = io.Discard
	return &Proxy{
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", engineSock)
		},
		Translate: windows("c"),
		Log:       quiet,
	}
}

func serveProxy(t testing.TB, p *Proxy) string {
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() { l.Close() })
	return sock
}

// readAnswer reads one answer off br: its status and body.
func readAnswer(t *testing.T, br *bufio.Reader, method string) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// Expect: 100-continue, as curl sends it for bodies over 1 MB: a create
// (which the proxy reads) and an upload (which it streams) each get the
// 100 and then their final answer.
func TestExpectContinue(t *testing.T) {
	sock := serveProxy(t, quietProxy(framingEngine(t)))
	create := `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src"]}}`
	for name, c := range map[string]struct{ head, body, want string }{
		"create": {fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(create)), create, "201"},
		"upload": {"PUT /upload HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", "hello", "200 5"},
	} {
		conn := dialUnix(t, sock)
		br := bufio.NewReader(conn)
		io.WriteString(conn, c.head)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("%s: first answer %q %v, want 100 Continue", name, line, err)
		}
		br.ReadString('\n') // the blank line ending the interim answer
		io.WriteString(conn, c.body)
		code, body := readAnswer(t, br, "POST")
		if got := fmt.Sprintf("%d %s", code, body); !strings.HasPrefix(got, c.want) {
			t.Fatalf("%s: %s, want %s", name, got, c.want)
		}
		if name == "create" && strings.Contains(body, "100-continue") {
			t.Fatal("the engine was sent the Expect the proxy answered itself")
		}
	}
}

// A chunked create with a trailer, then a ping and an interim answer, on
// one connection, pipelined: all answered, in order.
func TestChunkedTrailerAndPipelining(t *testing.T) {
	conn := dialUnix(t, serveProxy(t, quietProxy(framingEngine(t))))
	create := `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src"]}}`
	io.WriteString(conn, fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n", len(create), create)+
		"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"+
		"PUT /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n"+
		"GET /hints HTTP/1.1\r\nHost: d\r\n\r\n")
	br := bufio.NewReader(conn)
	if code, _ := readAnswer(t, br, "POST"); code != 201 {
		t.Fatalf("chunked create: %d", code)
	}
	if code, body := readAnswer(t, br, "GET"); code != 200 || body != "OK" {
		t.Fatalf("the ping after it: %d %q", code, body)
	}
	if code, body := readAnswer(t, br, "PUT"); code != 200 || body != "3" {
		t.Fatalf("a chunked upload with a trailer: %d %q", code, body)
	}
	// The interim 103, passed on, then the final answer.
	if code, _ := readAnswer(t, br, "GET"); code != http.StatusEarlyHints {
		t.Fatalf("early hints: %d", code)
	}
	if code, body := readAnswer(t, br, "GET"); code != 200 || body != "final" {
		t.Fatalf("after early hints: %d %q", code, body)
	}
}

// The engine's answer that comes before the whole body reaches the
// client, whole; a 20 MB upload it does not read ends in its 404.
func TestEarlyAnswerReachesTheClient(t *testing.T) {
	sock := serveProxy(t, quietProxy(framingEngine(t)))
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	body := strings.NewReader(strings.Repeat("x", 20<<20))
	req, _ := http.NewRequest(http.MethodPut, "http://docker/refuse", body)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("the client got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "No such container") {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
}

// Framing the engine could read otherwise than the proxy is refused
// deliberately, and routes are matched as dockerd's router matches them.
func TestFramingRefusalsAndRoutes(t *testing.T) {
	sock := serveProxy(t, quietProxy(framingEngine(t)))
	for name, raw := range map[string]string{
		"HTTP/1.0 with Transfer-Encoding": "PUT /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"a chunk size near 2^63":          "POST /containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc\r\n",
		"a chunk size not in hex":         "PUT /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		"a streamed chunk size near 2^63": "PUT /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nabc\r\n",
		"a Kelvin sign in Content-Length": "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Lengt\u212a: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	} {
		conn := dialUnix(t, sock)
		io.WriteString(conn, raw)
		conn.CloseWrite()
		b, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
			t.Errorf("%s: answered %q", name, b)
		}
	}
	create := `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src"]}}`
	for _, path := range []string{"/v1.44.0/containers/create", "/v1.41/containers/%63reate", "/v1.41/%63ontainers/create"} {
		if !createPath.MatchString(mustRoute(t, path)) {
			t.Errorf("%s is not matched as a create", path)
		}
		conn := dialUnix(t, sock)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", path, len(create), create)
		code, _ := readAnswer(t, bufio.NewReader(conn), "POST")
		_ = code // the stand-in engine routes only some of these; matching is what is tested
	}
}

func mustRoute(t *testing.T, path string) string {
	h, err := parseHead([]byte("POST "+path+" HTTP/1.1\r\nHost: d\r\n\r\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	return h.route
}

// Thousands of clients that send half a head and stop do not starve the
// others; once the head deadline has closed them, the proxy's memory and
// descriptors are back where they were. The half heads come from one
// peer and the others from another (TCP on loopback addresses: the
// connection cap is shared by peer, and one process is one unix peer).
func TestHalfHeadsStarveNobody(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	const slow, normal = 2000, 100
	if lim.Cur < 2*slow+4*normal+200 {
		t.Skipf("RLIMIT_NOFILE is %d: too few descriptors for %d connections", lim.Cur, slow+normal)
	}
	p := quietProxy(framingEngine(t))
	p.HeadTimeout = 2 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(l)
	t.Cleanup(func() { l.Close() })
	dialFrom := func(ctx context.Context, ip string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return d.DialContext(ctx, "tcp", l.Addr().String())
	}
	// Warm up, then measure.
	ping := func(c *http.Client) error {
		resp, err := c.Get("http://docker/_ping")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	newClient := func() *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialFrom(ctx, "127.0.0.3")
		}}}
	}
	round := func() {
		var halves []net.Conn
		for range slow {
			c, err := dialFrom(context.Background(), "127.0.0.2")
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET /_ping HTTP/1.1\r\nHo")
			halves = append(halves, c)
		}
		var wg sync.WaitGroup
		errs := make(chan error, normal)
		for range normal {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := newClient()
				defer c.CloseIdleConnections()
				for range 5 {
					if err := ping(c); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("a normal client beside %d half heads: %v", slow, err)
		}
		// The head deadline closes the slow ones.
		closed := 0
		for _, c := range halves {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(c); err == nil {
				closed++
			}
			c.Close()
		}
		if closed != slow {
			t.Fatalf("%d of %d half heads closed by the proxy", closed, slow)
		}
	}
	// The first round grows what the runtime keeps for good once a
	// process has had that many goroutines (their descriptors, for
	// reuse); what a round leaves after that is what the proxy holds.
	round()
	time.Sleep(200 * time.Millisecond)
	heap, fds := settled()
	round()
	time.Sleep(200 * time.Millisecond)
	heap2, fds2 := settled()
	t.Logf("heap %d → %d KiB, descriptors %d → %d", heap>>10, heap2>>10, fds, fds2)
	if float64(heap2) > 1.1*float64(heap) || float64(fds2) > 1.1*float64(fds) {
		t.Fatalf("after the half heads: heap %d → %d KiB, descriptors %d → %d", heap>>10, heap2>>10, fds, fds2)
	}
}

// settled is the heap in use after a collection, and the open
// descriptors.
func settled() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse, openFDs()
}

func openFDs() int {
	entries, _ := filepath.Glob("/proc/self/fd/*")
	return len(entries)
}

// A create the proxy refuses (a source it cannot map, a body cut short)
// gives its share of the create budget back.
func TestRefusedCreatesGiveTheBudgetBack(t *testing.T) {
	p := quietProxy(framingEngine(t))
	p.Budget = &fairshare.Pool{Limit: 8 * maxCreateBody}
	sock := serveProxy(t, p)
	bad := `{"Image":"x","HostConfig":{"Binds":["Q:\\x:/x"]}}`
	for _, raw := range []string{
		fmt.Sprintf("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(bad), bad),
		fmt.Sprintf("POST /containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(bad), bad),
		"POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 100\r\n\r\n{\"Image\":",
	} {
		c := dialUnix(t, sock)
		io.WriteString(c, raw)
		c.CloseWrite()
		io.ReadAll(c)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Budget.Used() != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if used := p.Budget.Used(); used != 0 {
		t.Fatalf("%d bytes of the create budget still taken after refused creates", used)
	}
}

// A build sends every registry's credentials in one header
// (X-Registry-Config): heads up to dockerd's own 1 MB limit pass whole,
// on a keep-alive connection that goes on; a larger one is a 431; and
// the large buffers come from the budget, which comes back.
func TestLargeRequestHeads(t *testing.T) {
	engine := framingEngine(t)
	p := quietProxy(engine)
	p.Budget = &fairshare.Pool{Limit: maxRequestHead + headBuffer, Share: maxRequestHead + headBuffer, Reserve: 1}
	sock := serveProxy(t, p)
	conn := dialUnix(t, sock)
	br := bufio.NewReader(conn)
	for _, n := range []int{100, 80 << 10, 900 << 10, 100} {
		fmt.Fprintf(conn, "GET /registry-config HTTP/1.1\r\nHost: d\r\nX-Registry-Config: %s\r\n\r\n", strings.Repeat("e", n))
		if code, body := readAnswer(t, br, "GET"); code != http.StatusOK || body != fmt.Sprint(n) {
			t.Fatalf("a %d-byte header: %d %q; want it whole to the engine", n, code, body)
		}
	}
	if used := p.Budget.Used(); used != 0 {
		t.Errorf("%d bytes of the budget still taken once the large head was answered", used)
	}

	// A client that sends most of a large head and stops holds the
	// budget until its head deadline; another large head meanwhile is
	// told to try again; small ones go on.
	stalled := dialUnix(t, sock)
	fmt.Fprintf(stalled, "GET /registry-config HTTP/1.1\r\nHost: d\r\nX-Registry-Config: %s", strings.Repeat("e", 200<<10))
	waitUntilTrue(t, func() bool { return p.Budget.Used() > 0 })
	other := dialUnix(t, sock)
	fmt.Fprintf(other, "GET /registry-config HTTP/1.1\r\nHost: d\r\nX-Registry-Config: %s\r\n\r\n", strings.Repeat("e", 200<<10))
	if code, body := readAnswer(t, bufio.NewReader(other), "GET"); code != http.StatusServiceUnavailable {
		t.Errorf("a large head while the budget is spent: %d %q; want 503", code, body)
	}
	fmt.Fprintf(conn, "GET /registry-config HTTP/1.1\r\nHost: d\r\nX-Registry-Config: e\r\n\r\n")
	if code, _ := readAnswer(t, br, "GET"); code != http.StatusOK {
		t.Errorf("a small head while the budget is spent: %d", code)
	}
	stalled.Close()
	waitUntilTrue(t, func() bool { return p.Budget.Used() == 0 })

	over := dialUnix(t, sock)
	go fmt.Fprintf(over, "GET /registry-config HTTP/1.1\r\nHost: d\r\nX-Registry-Config: %s\r\n\r\n", strings.Repeat("e", maxRequestHead))
	if code, body := readAnswer(t, bufio.NewReader(over), "GET"); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a head over 1 MB: %d %q; want 431", code, body)
	}
	waitUntilTrue(t, func() bool { return p.Budget.Used() == 0 })
}

func waitUntilTrue(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

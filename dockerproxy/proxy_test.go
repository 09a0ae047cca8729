package dockerproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// firstLineRead tells the stand-in engine's GET /logs?held that its
// client read the first line.
var firstLineRead = make(chan struct{})

// engine is a stand-in for dockerd's API: just what the tests ask of it.
func engine(t testing.TB) string {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("HEAD /_ping", func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Content-Length", "2") })
	mux.HandleFunc("POST /{version}/containers/create", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write(b) // what the engine received, for the test to read
	})
	mux.HandleFunc("POST /containers/{id}/start", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "broken" {
			http.Error(w, `{"message":"cannot start"}`, http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /logs", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "line %d\n", i)
			w.(http.Flusher).Flush()
			if i == 0 && r.URL.Query().Has("held") {
				// Nothing more until the client has read the first line: a
				// proxy that held it back would wait for ever.
				select {
				case <-firstLineRead:
				case <-r.Context().Done():
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	mux.HandleFunc("POST /attach", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		// Echo stdin until the client half-closes, then say goodbye.
		io.Copy(conn, brw)
		io.WriteString(conn, "bye\n")
	})
	mux.HandleFunc("POST /exec/{id}/start", func(w http.ResponseWriter, r *http.Request) {
		// dockerd reads the start's JSON body whole, then hijacks.
		io.Copy(io.Discard, r.Body)
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
		io.Copy(conn, brw)
		io.WriteString(conn, "bye\n")
	})
	return serveEngine(t, mux)
}

// serveEngine serves h, a stand-in for dockerd's API, on a unix socket
// (a real net/http server) and returns the socket's path.
func serveEngine(t testing.TB, h http.Handler) string {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

type fakePorts struct{ reserved, released []string }

func (f *fakePorts) Reserve(_ context.Context, id string) (func(), error) {
	if id == "taken" {
		return nil, &PortTakenError{Container: "web (taken)", Addr: "0.0.0.0:18090", Err: errors.New("address already in use")}
	}
	f.reserved = append(f.reserved, id)
	return func() { f.released = append(f.released, id) }, nil
}

func proxyFor(t testing.TB, engineSock string, ports PortReserver) string {
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.Out = io.Discard
	p := &Proxy{
		Dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", engineSock)
		},
		Translate: windows("c"),
		Ports:     ports,
		Log:       quiet,
	}
	go p.Serve(l)
	t.Cleanup(func() { l.Close() })
	return sock
}

func dialUnix(t testing.TB, sock string) *net.UnixConn {
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.UnixConn)
}

// Several requests on one connection, HEAD, a rewritten create, a refused
// start and a streamed response, all in order on one keep-alive
// connection.
func TestProxyKeepAliveRewritesAndPassesThrough(t *testing.T) {
	ports := &fakePorts{}
	sock := proxyFor(t, engine(t), ports)
	c := dialUnix(t, sock)
	br := bufio.NewReader(c)
	send := func(raw string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		method := strings.Fields(raw)[0]
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	body := func(resp *http.Response) string {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	if r := send("GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"); body(r) != "OK" {
		t.Fatal("ping")
	}
	if r := send("HEAD /_ping HTTP/1.1\r\nHost: d\r\n\r\n"); r.StatusCode != 200 || r.ContentLength != 2 || body(r) != "" {
		t.Fatalf("HEAD: %d %d", r.StatusCode, r.ContentLength)
	}
	create := `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src:ro"],"Next":true}}`
	r := send(fmt.Sprintf("POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(create), create))
	var seen struct {
		HostConfig struct {
			Binds []string
			Next  bool
		}
	}
	if err := json.Unmarshal([]byte(body(r)), &seen); err != nil || r.StatusCode != 201 || seen.HostConfig.Binds[0] != "/run/desktop/mnt/host/c/src:/src:ro" || !seen.HostConfig.Next {
		t.Fatalf("create as the engine saw it: %d %+v %v", r.StatusCode, seen, err)
	}
	bad := `{"HostConfig":{"Binds":["Q:\\x:/x"]}}`
	r = send(fmt.Sprintf("POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(bad), bad))
	if b := body(r); r.StatusCode != 400 || !strings.Contains(b, `Q:\\x`) || !strings.Contains(b, "drive Q:") {
		t.Fatalf("unmounted drive: %d %s", r.StatusCode, b)
	}
	r = send("POST /containers/taken/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n")
	if b := body(r); r.StatusCode != 500 || !strings.Contains(b, "Bind for 0.0.0.0:18090 failed: port is already allocated") {
		t.Fatalf("a taken port: %d %s", r.StatusCode, b)
	}
	if r := send("POST /containers/ok/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"); r.StatusCode != 204 || len(ports.released) != 0 {
		t.Fatalf("start: %d, released %v", r.StatusCode, ports.released)
	}
	if r := send("POST /containers/broken/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n"); r.StatusCode != 500 || strings.Join(ports.released, ",") != "broken" {
		body(r)
		t.Fatalf("a failed start keeps its ports: %d, released %v", r.StatusCode, ports.released)
	} else {
		body(r)
	}
	// A chunked upload, then a streamed answer whose lines arrive as sent.
	r = send("POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	if b := body(r); b != "11" {
		t.Fatalf("chunked upload: %q", b)
	}
	r = send("GET /logs?held HTTP/1.1\r\nHost: d\r\n\r\n")
	lines := bufio.NewReader(r.Body)
	first := make(chan string, 1)
	go func() { l, _ := lines.ReadString('\n'); first <- l }()
	select {
	case l := <-first:
		if l != "line 0\n" {
			t.Fatalf("the stream's first line: %q", l)
		}
		firstLineRead <- struct{}{}
	case <-time.After(30 * time.Second):
		t.Fatal("the stream's first line was held back until more came")
	}
	if rest := body(r); rest != "line 1\nline 2\n" {
		t.Fatalf("stream: %q", rest)
	}
}

// A hijacked connection carries bytes both ways and passes a half-close.
func TestProxyHijackAndHalfClose(t *testing.T) {
	c := dialUnix(t, proxyFor(t, engine(t), nil))
	io.WriteString(c, "POST /attach HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\nstdin before the answer\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "more stdin\n")
	c.CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "stdin before the answer\nmore stdin\nbye\n" {
		t.Fatalf("through the hijacked connection: %q %v", rest, err)
	}
}

// An upgrade whose request has a body (an exec start, as `docker exec -i`
// sends it) ends its connection's handler once both sides are done,
// whichever of the body's sending and the engine's 101 the proxy sees
// first: a handler left waiting holds ddinit's shutdown.
func TestUpgradeWithABodyEnds(t *testing.T) {
	p := quietProxy(engine(t))
	sock := filepath.Join(t.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := `{"Detach":false,"Tty":false}`
	for i := range 40 {
		c := dialUnix(t, sock)
		served, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { p.Handle(context.Background(), served); close(done) }()
		fmt.Fprintf(c, "POST /exec/e%d/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", i, len(start), start)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodPost})
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("exec start %d: %v %v", i, resp, err)
		}
		io.WriteString(c, "stdin\n")
		c.CloseWrite()
		if rest, _ := io.ReadAll(br); string(rest) != "stdin\nbye\n" {
			t.Fatalf("exec %d through the hijack: %q", i, rest)
		}
		c.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("exec %d: the proxy's handler did not end after both sides closed", i)
		}
	}
}

// Garbage, a truncated head and an oversized head get an answer or a
// close, never a hang.
func TestProxyRefusesMalformedRequests(t *testing.T) {
	sock := proxyFor(t, engine(t), nil)
	for name, raw := range map[string]string{
		"garbage":   "\x00\x01\x02 not http\r\n\r\n",
		"no method": "GET\r\n\r\n",
		"big head":  "GET /_ping HTTP/1.1\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
		"truncated": "GET /_ping HTTP/1.1\r\nHost: d\r\n",
	} {
		c := dialUnix(t, sock)
		io.WriteString(c, raw)
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil && !(name == "big head" && errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("%s: %v", name, err)
		}
		if name != "truncated" && err == nil && !strings.HasPrefix(string(b), "HTTP/1.1 4") {
			t.Errorf("%s: answered %q", name, b)
		}
	}
}

// recorder is a real net/http server that records each request its
// handler is given: method, target, body and trailer.
type recorder struct {
	sock   string
	mu     sync.Mutex
	seen   []seen
	dialed atomic.Int64 // connections made to it
	closed atomic.Int64 // connections it has finished with
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{sock: filepath.Join(t.TempDir(), "rec.sock")}
	l, err := net.Listen("unix", r.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/early") {
			// Answered before the body is read, as dockerd refuses an
			// upload for a container it does not know.
			r.add(seen{Method: req.Method, Target: req.RequestURI, Unread: true})
			http.Error(w, "no such thing", http.StatusNotFound)
			return
		}
		if strings.HasPrefix(req.URL.Path, "/hints") {
			w.WriteHeader(http.StatusEarlyHints)
		}
		b, err := io.ReadAll(req.Body)
		// A body cut off is one the handler must not act on: which
		// error cut it off is the server's business.
		r.add(seen{Method: req.Method, Target: req.RequestURI, Body: string(b), CutOff: err != nil, Trailer: fmt.Sprint(req.Trailer)})
		io.WriteString(w, "ok")
	}), ReadHeaderTimeout: time.Second,
		// Every connection is waited for: a handler runs within one.
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				r.closed.Add(1)
			}
		}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r
}

// seen is a request as a handler saw it.
type seen struct {
	Method, Target, Body string
	CutOff, Unread       bool
	Trailer              string
}

func (r *recorder) add(s seen) {
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
}

// dial opens a connection to it, counted.
func (r *recorder) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", r.sock)
	if err == nil {
		r.dialed.Add(1)
	}
	return c, err
}

// take returns what the handler saw, once the server has finished with
// every connection made to it.
func (r *recorder) take() []seen {
	for deadline := time.Now().Add(5 * time.Second); r.closed.Load() < r.dialed.Load() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Microsecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

// sendAll writes in as one client over dial, half-closes, and reads what
// comes back until the server closes.
func sendAll(dial func(context.Context) (net.Conn, error), in []byte) []byte {
	c, err := dial(context.Background())
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	go func() {
		c.Write(in)
		c.(*net.UnixConn).CloseWrite()
	}()
	out, _ := io.ReadAll(c)
	return out
}

// FuzzProxyRequest feeds arbitrary bytes as a client, once straight to a
// real net/http server and once through the proxy to another: the
// requests the server's handler sees through the proxy are the ones it
// sees straight, in order (none the client did not send, none changed),
// and where the proxy stops early it has answered with an error, never
// dropped requests silently. Pipelining, interim answers, early answers,
// chunked bodies and trailers all come up.
func FuzzProxyRequest(f *testing.F) {
	f.Add([]byte("GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"))
	f.Add([]byte("POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"))
	f.Add([]byte("PUT /early HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: d\r\n\r\n"))
	f.Add([]byte("POST /hints HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nHost: d\r\n\r\n"))
	f.Add([]byte("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\nGET /c HTTP/1.1\r\nHost: d\r\n\r\n"))
	direct, proxied := newRecorder(f), newRecorder(f)
	quiet := logrus.New()
	quiet.Out = io.Discard
	p := &Proxy{
		Dial:        proxied.dial,
		HeadTimeout: time.Second,
		IdleTimeout: time.Second,
		Log:         quiet,
	}
	// The proxy serves one connection at a time here, and says when it is
	// done with it: only then is what reached the server all there is.
	sock := filepath.Join(f.TempDir(), "proxy.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	handled := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.Handle(context.Background(), c)
			handled <- struct{}{}
		}
	}()
	f.Fuzz(func(t *testing.T, in []byte) {
		sendAll(direct.dial, in)
		answers := sendAll(func(ctx context.Context) (net.Conn, error) { var d net.Dialer; return d.DialContext(ctx, "unix", sock) }, in)
		<-handled
		want, got := direct.take(), proxied.take()
		refused := bytes.Contains(answers, []byte("HTTP/1.1 400"))
		for i, g := range got {
			switch {
			case i < len(want) && g == want[i]:
			// A body the proxy refused part of the way (framing the
			// server might read otherwise) reaches the server cut off,
			// never whole and different, and the client is told.
			case i == len(got)-1 && i < len(want) && refused && g.CutOff && g.Method == want[i].Method && g.Target == want[i].Target && strings.HasPrefix(want[i].Body, g.Body):
			default:
				t.Fatalf("%q\nstraight to the server: %+v\nthrough the proxy:      %+v", in, want, got)
			}
		}
		if len(got) < len(want) && !bytes.Contains(answers, []byte("HTTP/1.1 4")) && !bytes.Contains(answers, []byte("HTTP/1.1 5")) && !bytes.Contains(answers, []byte("HTTP/1.0 4")) {
			t.Fatalf("%q\nrequests lost without an error answer: straight %+v, through the proxy %+v; the client read %q", in, want, got, answers)
		}
	})
}

package dockerproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// restartableEngine serves a net/http engine on sock until stop, which
// closes it as dockerd's restart does: every idle connection goes.
func restartableEngine(t *testing.T, sock string) (stop func()) {
	t.Helper()
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("POST /containers/{id}/start", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /containers/create", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		w.Write(b)
	})
	mux.HandleFunc("PUT /upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			srv.Shutdown(context.Background())
		}
	}
	t.Cleanup(stop)
	return stop
}

// The engine restarts (or stops idle, or a version switch replaces it)
// while a client keeps its connection to the proxy: every kind of request
// the client sends next is answered by the new engine, as it is straight
// to the engine, where Go's client sees its idle connection closed.
func TestEngineRestartBetweenRequests(t *testing.T) {
	engineSock := filepath.Join(t.TempDir(), "engine.sock")
	stop := restartableEngine(t, engineSock)
	proxy := serveProxy(t, quietProxy(engineSock))
	dials := 0
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials++
		var d net.Dialer
		return d.DialContext(ctx, "unix", proxy)
	}}}
	requests := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/_ping", "", http.StatusOK},
		{"POST", "/containers/x/start", "", http.StatusNoContent},
		{"POST", "/containers/create", `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src"]}}`, http.StatusCreated},
		{"PUT", "/upload", strings.Repeat("u", 256<<10), http.StatusOK},
	}
	for _, first := range requests {
		for _, next := range requests {
			do := func(r struct {
				method, path, body string
				want               int
			}) {
				t.Helper()
				var body io.Reader
				if r.body != "" {
					body = strings.NewReader(r.body)
				}
				req, _ := http.NewRequest(r.method, "http://docker"+r.path, body)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s after %s %s and a restart: %v", r.method, r.path, first.method, first.path, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != r.want {
					t.Fatalf("%s %s after %s %s and a restart: %s %q", r.method, r.path, first.method, first.path, resp.Status, b)
				}
			}
			do(first)
			stop()
			stop = restartableEngine(t, engineSock)
			time.Sleep(20 * time.Millisecond) // the old engine's close reaches the proxy
			do(next)
		}
	}
	if dials != 1 {
		t.Errorf("the client dialled the proxy %d times; want its one connection kept throughout", dials)
	}
}

// closingEngine answers the first request on each connection and then
// reads the next and closes without a word: an engine closing an idle
// connection just as a request comes. It counts the requests it read.
func closingEngine(t *testing.T, answerAll bool) (string, *atomic.Int32) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var seen atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					seen.Add(1)
					if i > 0 && !answerAll {
						return // closed as idle: the request is dropped
					}
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
				}
			}()
		}
	}()
	return sock, &seen
}

// A request that reaches an engine closing the connection as idle gets
// no answer there: a GET goes again, once, on a new connection; a POST,
// which may have had its effect, is answered 502, as Go's own client
// gives up on it.
func TestRequestLostToAnIdleCloseGoesAgainOnlyIfSafe(t *testing.T) {
	sock, seen := closingEngine(t, false)
	proxy := serveProxy(t, quietProxy(sock))
	for _, c := range []struct {
		second   string
		want     int
		requests int32
	}{
		{"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n", http.StatusOK, 3},                                            // the first, the lost one, the one sent again
		{"POST /containers/x/start HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n", http.StatusBadGateway, 2}, // not sent again
	} {
		seen.Store(0)
		conn := dialUnix(t, proxy)
		br := bufio.NewReader(conn)
		io.WriteString(conn, "GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
		if code, _ := readAnswer(t, br, "GET"); code != http.StatusOK {
			t.Fatalf("first request: %d", code)
		}
		io.WriteString(conn, c.second)
		code, body := readAnswer(t, br, strings.Fields(c.second)[0])
		conn.Close()
		if code != c.want || seen.Load() != c.requests {
			t.Errorf("%q after an idle close: %d %q, the engine read %d requests; want %d and %d", strings.Fields(c.second)[:2], code, body, seen.Load(), c.want, c.requests)
		}
	}
}

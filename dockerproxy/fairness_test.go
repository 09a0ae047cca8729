package dockerproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/engineclient"

	"github.com/ddinit/ddinit/fairshare"
)

// streamingEngine is a stand-in engine whose GET /events streams until
// the test ends, and whose create answers 201 with what it received; it
// records the heads it was sent.
func streamingEngine(t *testing.T) (sock string, heads func() []http.Header) {
	sock = filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var mu sync.Mutex
	var seen []http.Header
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{}\n")
		w.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("POST /{version}/containers/create", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"Id":"c%d"}`, len(b))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { close(done); srv.Close() })
	return sock, func() []http.Header {
		mu.Lock()
		defer mu.Unlock()
		return append([]http.Header(nil), seen...)
	}
}

// smallCreate sends a small create on a new connection and returns the
// answer's status.
func smallCreate(t *testing.T, sock string, extra string) int {
	t.Helper()
	c := dialUnix(t, sock)
	body := `{"Image":"busybox","HostConfig":{"Binds":["C:\\src:/src"]}}`
	fmt.Fprintf(c, "POST /v1.51/containers/create HTTP/1.1\r\nHost: d\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(body), body)
	code, _ := readAnswer(t, bufio.NewReader(c), "POST")
	return code
}

// 64 streams (events, logs -f, a build) each opened with a head over 64
// KB stay open; the large buffers their heads took are back once the
// heads were read, and a create still goes through.
func TestLongRequestsWithLargeHeadsHoldNoBudget(t *testing.T) {
	engine, _ := streamingEngine(t)
	p := quietProxy(engine)
	p.Budget = &fairshare.Pool{Limit: CreateBudget.Limit, Share: CreateBudget.Share, Reserve: CreateBudget.Reserve}
	sock := serveProxy(t, p)
	auth := strings.Repeat("a", 70<<10)
	for i := range 64 {
		c := dialUnix(t, sock)
		c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: d\r\nX-Registry-Auth: %s\r\n\r\n", auth)
		br := bufio.NewReader(c)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("stream %d: %q %v", i, line, err)
		}
	}
	if used := p.Budget.Used(); used != 0 {
		t.Errorf("64 open streams hold %d bytes of the budget", used)
	}
	if code := smallCreate(t, sock, ""); code != http.StatusCreated {
		t.Fatalf("a create beside 64 streams with large heads: %d", code)
	}
}

// One client (a distro, through its proxy; the Windows side) sending 16
// slow creates of 4 MB takes its share of the budget and no more: the
// others' small creates are still answered 201; its own past its share
// are told to try again.
func TestOneClientCannotTakeTheCreateBudget(t *testing.T) {
	engine, _ := streamingEngine(t)
	budget := &fairshare.Pool{Limit: CreateBudget.Limit, Share: CreateBudget.Share, Reserve: CreateBudget.Reserve}
	trusted := quietProxy(engine) // the socket the distros' proxies use
	trusted.Trusted, trusted.Budget = true, budget
	windows := quietProxy(engine)
	windows.Side, windows.Budget = "windows", budget
	trustedSock, windowsSock := serveProxy(t, trusted), serveProxy(t, windows)

	for _, flood := range []struct{ name, sock, header string }{
		{"a distro", trustedSock, engineclient.ClientHeader + ": distro/Ubuntu\r\n"},
		{"the Windows side", windowsSock, ""},
	} {
		t.Run(flood.name, func(t *testing.T) {
			var conns []net.Conn
			refused := 0
			for range 16 {
				c := dialUnix(t, flood.sock)
				c.SetDeadline(time.Now().Add(time.Minute))
				fmt.Fprintf(c, "POST /v1.51/containers/create HTTP/1.1\r\nHost: d\r\n%sContent-Length: %d\r\n\r\n{\"Image\":", flood.header, maxCreateBody)
				conns = append(conns, c)
			}
			// The creates the budget refused are answered at once; the
			// others wait for bodies that do not come.
			for _, c := range conns {
				c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.Contains(line, " 503 ") {
					refused++
				}
			}
			if refused != 12 {
				t.Errorf("%d of 16 slow creates refused; want 12 (four fit a client's share)", refused)
			}
			if code := smallCreate(t, trustedSock, engineclient.ClientHeader+": distro/Debian\r\n"); code != http.StatusCreated {
				t.Errorf("another distro's create: %d", code)
			}
			if flood.sock != windowsSock {
				if code := smallCreate(t, windowsSock, ""); code != http.StatusCreated {
					t.Errorf("a create from Windows: %d", code)
				}
			}
			for _, c := range conns {
				c.Close()
			}
			waitUntilTrue(t, func() bool { return budget.Used() == 0 })
		})
	}
}

// The markers only ddinit's own callers may set are honoured on a
// trusted socket only: every other strips them before the engine (and a
// proxy after it) sees them, and a distro's proxy says which distro it
// passes requests on for.
func TestInternalMarkersOnlyFromTrustedClients(t *testing.T) {
	engine, heads := streamingEngine(t)
	untrusted := quietProxy(engine)
	var dialedInternal []bool
	var mu sync.Mutex
	dial := untrusted.Dial
	untrusted.Dial = func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		dialedInternal = append(dialedInternal, engineclient.Internal(ctx))
		mu.Unlock()
		return dial(ctx)
	}
	trusted := quietProxy(engine)
	trusted.Trusted, trusted.Dial = true, untrusted.Dial
	distro := quietProxy(engine)
	distro.Identity = "distro/Ubuntu"
	for _, tc := range []struct {
		name         string
		sock         string
		wantInternal bool
		wantClient   string
	}{
		{"untrusted", serveProxy(t, untrusted), false, ""},
		{"trusted", serveProxy(t, trusted), true, "distro/forged"},
		{"a distro's proxy", serveProxy(t, distro), false, "distro/Ubuntu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(heads())
			mu.Lock()
			dialedInternal = nil
			mu.Unlock()
			c := dialUnix(t, tc.sock)
			fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: d\r\n%s: 1\r\n%s: distro/forged\r\n\r\n", engineclient.InternalHeader, engineclient.ClientHeader)
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
				t.Fatalf("%q %v", line, err)
			}
			h := heads()[before]
			if got := h.Get(engineclient.InternalHeader) != ""; got != tc.wantInternal {
				t.Errorf("the engine saw the internal marker: %v, want %v", got, tc.wantInternal)
			}
			if got := strings.Join(h.Values(engineclient.ClientHeader), ","); got != tc.wantClient {
				t.Errorf("the engine saw client %q, want %q", got, tc.wantClient)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.name != "a distro's proxy" && (len(dialedInternal) != 1 || dialedInternal[0] != tc.wantInternal) {
				t.Errorf("dialled as ddinit's own: %v, want [%v]", dialedInternal, tc.wantInternal)
			}
		})
	}
}

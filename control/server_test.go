package control

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// readyBackend answers /ping 200 and has nothing else.
type readyBackend struct{}

func (readyBackend) Status() Status { return Status{State: "running"} }
func (readyBackend) Health() Health { return Health{State: "running", Ready: true} }
func (readyBackend) Logs(string, int, bool) ([]LogLine, <-chan LogLine, func(), error) {
	return nil, nil, func() {}, nil
}
func (readyBackend) Restart(string) error                 { return nil }
func (readyBackend) Shutdown()                            {}
func (readyBackend) Diagnostics(io.Writer) error          { return nil }
func (readyBackend) Settings() Settings                   { return Settings{} }
func (readyBackend) PutSettings([]byte) (Settings, error) { return Settings{}, nil }
func (readyBackend) UsePack(UsePack) (PackState, error)   { return PackState{}, nil }
func (readyBackend) ResetKubernetes() error               { return nil }
func (readyBackend) Kubeconfig() ([]byte, error)          { return nil, nil }

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// listenUnix opens a listening unix socket and returns its path and its
// file, from which each server gets a copy of its own (as PID 1 and ddinit
// run each hold one).
func listenUnix(t *testing.T) (string, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the socket outlives this copy of it
	f, err := ul.File()
	ul.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return path, f
}

func serveCopy(t *testing.T, f *os.File, standIn bool) *Server {
	t.Helper()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Backend: readyBackend{}, Log: quietLog(), StandIn: standIn}
	s.Serve(l)
	return s
}

func ping(conn net.Conn) (int, error) {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET /ping HTTP/1.1\r\nHost: ddinit\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A client that connected before Close and sends its request while Close
// is under way gets its answer (net/http's Shutdown would close it
// unanswered: the EOF a live switch's poller saw).
func TestCloseAnswersAConnectionItAccepted(t *testing.T) {
	for _, standIn := range []bool{false, true} {
		path, f := listenUnix(t)
		s := serveCopy(t, f, standIn)
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		deadline := time.Now().Add(5 * time.Second)
		for s.owed() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // until the server has accepted it
		}
		if s.owed() == 0 {
			t.Fatalf("stand-in %v: the server never accepted the connection", standIn)
		}
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		<-s.closing
		time.Sleep(20 * time.Millisecond) // Close is waiting for the connection
		code, err := ping(conn)
		if err != nil || code != http.StatusOK {
			t.Fatalf("stand-in %v: a request sent during Close: status %d, %v; want 200", standIn, code, err)
		}
		<-closed
	}
}

// Clients on fresh connections, while the socket passes from one server
// to the next again and again (PID 1 to ddinit run standing in to the
// next PID 1): every request is answered, none refused or dropped.
func TestHandOverLeavesNoRequestUnanswered(t *testing.T) {
	path, f := listenUnix(t)
	cur := serveCopy(t, f, false)
	stop := make(chan struct{})
	var asked, faults atomic.Int64
	var firstFault atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.Dial("unix", path)
				if err == nil {
					var code int
					code, err = ping(conn)
					conn.Close()
					if err == nil && code != http.StatusOK {
						err = io.ErrUnexpectedEOF
					}
				}
				asked.Add(1)
				if err != nil {
					faults.Add(1)
					firstFault.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	for i := range 30 {
		time.Sleep(5 * time.Millisecond)
		cur.Close()
		cur = serveCopy(t, f, i%2 == 0)
	}
	close(stop)
	wg.Wait()
	cur.Close()
	if n := faults.Load(); n > 0 {
		t.Fatalf("%d of %d requests across 30 hand-overs went unanswered; first: %v", n, asked.Load(), firstFault.Load())
	}
	t.Logf("%d requests across 30 hand-overs, all answered", asked.Load())
}

// Close does not wait for a keep-alive connection between requests: it
// closes it (an idle client is owed nothing).
func TestCloseDropsIdleKeepAlive(t *testing.T) {
	path, f := listenUnix(t)
	s := serveCopy(t, f, false)
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	resp, err := client.Get("http://ddinit/ping")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	s.Close()
	if d := time.Since(start); d >= closeGrace {
		t.Fatalf("Close waited %v for an idle keep-alive connection", d)
	}
}

// followBackend has a log that is followed and never ends by itself.
type followBackend struct{ readyBackend }

func (followBackend) Logs(string, int, bool) ([]LogLine, <-chan LogLine, func(), error) {
	return []LogLine{{Service: "dockerd", Text: "a line"}}, make(chan LogLine), func() {}, nil
}

// A followed log (`ddinit logs -f`) ends cleanly when the server closes:
// the client reads the whole stream to its end, and Close does not wait
// out its grace for it.
func TestCloseEndsFollowedLogs(t *testing.T) {
	path, f := listenUnix(t)
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Backend: followBackend{}, Log: quietLog()}
	s.Serve(l)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /logs?follow=1 HTTP/1.1\r\nHost: ddinit\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("the followed log's first line: %v", err)
	}
	start := time.Now()
	go s.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("the followed log after %q ended with %v; want its clean end", first, err)
	}
	if d := time.Since(start); d >= closeGrace {
		t.Fatalf("the followed log ended %v after Close began; want at once", d)
	}
}

// streamBackend's followed log is fed by the test.
type streamBackend struct {
	readyBackend
	ch chan LogLine
}

func (b streamBackend) Logs(string, int, bool) ([]LogLine, <-chan LogLine, func(), error) {
	return nil, b.ch, func() {}, nil
}

// A follower that stops reading (its socket full, the handler stuck in a
// write) does not hold Close for its whole grace.
func TestCloseCutsAFollowerThatDoesNotRead(t *testing.T) {
	path, f := listenUnix(t)
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan LogLine)
	s := &Server{Backend: streamBackend{ch: ch}, Log: quietLog()}
	s.Serve(l)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /logs?follow=1 HTTP/1.1\r\nHost: ddinit\r\n\r\n")
	long := LogLine{Text: string(make([]byte, 4000))}
	for stuck := false; !stuck; {
		select {
		case ch <- long:
		case <-time.After(200 * time.Millisecond):
			stuck = true // the handler no longer takes lines: its write waits
		}
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d >= closeGrace/2 {
		t.Fatalf("Close took %v with a follower that does not read; want it cut at once", d)
	}
}

// Close twice, or from two goroutines at once, is one Close.
func TestCloseTwice(t *testing.T) {
	path, f := listenUnix(t)
	s := serveCopy(t, f, false)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Close()
		}()
	}
	wg.Wait()
	s.Close()
	next := serveCopy(t, f, false)
	defer next.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if code, err := ping(conn); err != nil || code != http.StatusOK {
		t.Fatalf("the next server after a double Close: %d, %v", code, err)
	}
}

// A settings document that cannot be read is a 400 naming it, one too
// large a 413; both with the JSON error body every error has.
func TestPutSettingsBodyErrors(t *testing.T) {
	path, f := listenUnix(t)
	s := serveCopy(t, f, false)
	defer s.Close()
	for _, c := range []struct {
		name, head, body string
		code             int
	}{
		{"a malformed chunked body", "Transfer-Encoding: chunked", "zz\r\n{}\r\n0\r\n\r\n", http.StatusBadRequest},
		{"a body cut short", "Content-Length: 100", "{}", http.StatusBadRequest},
		{"a 2 MB document", "Content-Length: 2097152", string(make([]byte, 2<<20)), http.StatusRequestEntityTooLarge},
	} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			io.WriteString(conn, "PUT /settings HTTP/1.1\r\nHost: ddinit\r\nConnection: close\r\n"+c.head+"\r\n\r\n"+c.body)
		}()
		if c.name == "a body cut short" {
			<-sent
			conn.(*net.UnixConn).CloseWrite()
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var body errorBody
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != c.code || err != nil || body.Message == "" {
			t.Errorf("%s: %s, body %+v (%v); want %d with a JSON message", c.name, resp.Status, body, err, c.code)
		}
	}
}

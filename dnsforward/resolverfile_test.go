package dnsforward

import (
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/regularfile"
	"github.com/miekg/dns"
	"github.com/sirupsen/logrus/hooks/test"
)

// The resolver file may be anything, on a file system that may hang: no
// query, no Stats and no Close waits on it.

// localHost answers host.docker.internal, as ddinit run's Local does.
func localHost(name string) ([]netip.Addr, bool) {
	return []netip.Addr{netip.MustParseAddr("172.20.0.1")}, name == "host.docker.internal"
}

// promptly is how long a query, Stats or Close may take here: generous,
// against a file that would hold them for ever.
const promptly = 2 * time.Second

// askPromptly asks server name over UDP and returns the answer, failing
// the test when none comes promptly.
func askPromptly(t *testing.T, server net.Addr, name string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: "udp", Timeout: promptly}
	r, _, err := c.Exchange(query(name, dns.TypeA), server.String())
	if err != nil {
		t.Fatalf("asking %s: %v", name, err)
	}
	return r
}

func statsPromptly(t *testing.T, f *Forwarder) Stats {
	t.Helper()
	got := make(chan Stats, 1)
	go func() { got <- f.Stats() }()
	select {
	case st := <-got:
		return st
	case <-time.After(promptly):
		t.Fatal("Stats did not return")
	}
	return Stats{}
}

func closePromptly(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(promptly + 3*time.Second): // a query in flight ends within its budget
		t.Fatal("Close did not return")
	}
}

// badFiles make path something a resolver file must not be; each returns
// what FileError must say.
var badFiles = map[string]func(t *testing.T, path string) string{
	"a FIFO": func(t *testing.T, path string) string {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
		return "not a regular file: it is a FIFO (named pipe)"
	},
	"a socket": func(t *testing.T, path string) string {
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return "not a regular file: it is a socket"
	},
	"a directory": func(t *testing.T, path string) string {
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		return "not a regular file: it is a directory"
	},
	"a symlink loop": func(t *testing.T, path string) string {
		if err := os.Symlink(path, path); err != nil {
			t.Fatal(err)
		}
		return "too many levels of symbolic links"
	},
	"a device": func(t *testing.T, path string) string {
		if err := os.Symlink("/dev/zero", path); err != nil {
			t.Fatal(err)
		}
		return "not a regular file: it is a character device"
	},
	"too large": func(t *testing.T, path string) string {
		body := strings.Repeat("# padding\n", 7000) + "nameserver 127.0.0.99\n"
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return "larger than ddinit reads: over 65536 bytes"
	},
}

// A resolver file that becomes something else (its target replaced, as
// WSL replaces it): the served names and the nameservers of its last
// reading are answered, Stats names what the file is, Close returns; a
// good file again is followed.
func TestResolverFileThatIsNoFileKeepsTheLastReading(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.81", port, answerA("10.8.1.1"))
	startUpstream(t, "127.0.0.82", port, answerA("10.8.2.2"))
	for kind, makeBad := range badFiles {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			link := resolvConf(t, dir, "127.0.0.81")
			f := &Forwarder{ResolvConf: link, port: uint16(port), Local: localHost}
			s, server := serveLocal(t, f)
			if r := askPromptly(t, server, "a.example"); firstA(r) != "10.8.1.1" {
				t.Fatalf("before: %v", r)
			}
			target := filepath.Join(dir, "target")
			os.Remove(target)
			want := makeBad(t, target)
			for range 5 {
				if r := askPromptly(t, server, "a.example"); firstA(r) != "10.8.1.1" {
					t.Fatalf("with %s there: %v (stats %+v)", kind, r, f.Stats())
				}
				if r := askPromptly(t, server, "host.docker.internal"); firstA(r) != "172.20.0.1" {
					t.Fatalf("a served name with %s there: %v", kind, r)
				}
			}
			st := statsPromptly(t, f)
			if !strings.Contains(st.FileError, link+": "+want) || !strings.Contains(st.FileError, "forwarding to the nameservers it named before") || len(st.Servers) != 1 {
				t.Fatalf("stats with %s there: %+v", kind, st)
			}
			os.RemoveAll(target)
			replaceTarget(t, link, "127.0.0.82")
			if r := askPromptly(t, server, "a.example"); firstA(r) != "10.8.2.2" {
				t.Fatalf("a good file again: %v", r)
			}
			if st := statsPromptly(t, f); st.FileError != "" {
				t.Fatalf("a good file again: %+v", st)
			}
			closePromptly(t, s)
		})
	}
}

// A resolver file that never was a file: the served names are answered,
// the others fail at once naming why, and so does Stats.
func TestResolverFileThatNeverWasAFile(t *testing.T) {
	for kind, makeBad := range badFiles {
		t.Run(kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "resolv.conf")
			want := makeBad(t, path)
			f := &Forwarder{ResolvConf: path, Local: localHost}
			s, server := serveLocal(t, f)
			if r := askPromptly(t, server, "host.docker.internal"); firstA(r) != "172.20.0.1" {
				t.Fatalf("a served name: %v", r)
			}
			if r := askPromptly(t, server, "a.example"); r.Rcode != dns.RcodeServerFailure {
				t.Fatalf("a forwarded name: %v", r)
			}
			st := statsPromptly(t, f)
			if st.FileError != path+": "+want || st.LastFailure == nil || st.LastFailure.Reason != st.FileError {
				t.Fatalf("stats: %+v (want %q)", st, path+": "+want)
			}
			closePromptly(t, s)
		})
	}
}

// hungFS plays a file system that stops answering: once hung, a stat or
// a read (whichever it is given) waits until the test ends.
type hungFS struct {
	hung    atomic.Bool
	release chan struct{}
	once    sync.Once
	waiting atomic.Int32 // calls waiting now
	most    atomic.Int32 // the most at once
}

func newHungFS(t *testing.T) *hungFS {
	h := &hungFS{release: make(chan struct{})}
	t.Cleanup(h.answer)
	return h
}

func (h *hungFS) wait() {
	if !h.hung.Load() {
		return
	}
	n := h.waiting.Add(1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	<-h.release
	h.waiting.Add(-1)
}

// answer ends the hang: the calls waiting go on.
func (h *hungFS) answer() {
	h.once.Do(func() { h.hung.Store(false); close(h.release) })
}

// The file system under the resolver file hangs (its stat, or its read
// once the file changed): queries to the served names and to the
// nameservers of the last reading are answered, one look at the file is
// in flight, not one per query, Stats says the file system does not
// answer, Close returns; when it answers again, the file is followed.
func TestResolverFileOnAHungFileSystem(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.83", port, answerA("10.8.3.3"))
	startUpstream(t, "127.0.0.84", port, answerA("10.8.4.4"))
	for _, hang := range []string{"stat", "read"} {
		t.Run(hang, func(t *testing.T) {
			dir := t.TempDir()
			link := resolvConf(t, dir, "127.0.0.83")
			h := newHungFS(t)
			logger, logged := test.NewNullLogger()
			f := &Forwarder{ResolvConf: link, port: uint16(port), Local: localHost, Log: logger}
			if hang == "stat" {
				f.statFile = func(p string) fileID { h.wait(); return statFile(p) }
			} else {
				f.readFile = func(p string) ([]byte, error) { h.wait(); return ReadFile(p) }
			}
			s, server := serveLocal(t, f)
			if r := askPromptly(t, server, "a.example"); firstA(r) != "10.8.3.3" {
				t.Fatalf("before: %v", r)
			}
			h.hung.Store(true)
			replaceTarget(t, link, "127.0.0.84") // a change: the read is tried
			for range 20 {
				if r := askPromptly(t, server, "a.example"); firstA(r) != "10.8.3.3" {
					t.Fatalf("with the file system hung: %v (stats %+v)", r, f.Stats())
				}
				if r := askPromptly(t, server, "host.docker.internal"); firstA(r) != "172.20.0.1" {
					t.Fatalf("a served name with the file system hung: %v", r)
				}
			}
			if n := h.most.Load(); n != 1 {
				t.Fatalf("%d looks at the file waited at once, want 1", n)
			}
			st := statsPromptly(t, f)
			if !strings.Contains(st.FileError, link+": its file system has not answered for") || !strings.Contains(st.FileError, "forwarding to the nameservers it named before") {
				t.Fatalf("stats with the file system hung: %+v", st)
			}
			// Hung for a second: the log says so.
			waitFor(t, promptly, "the log to say the file system does not answer", func() bool {
				for _, e := range logged.AllEntries() {
					if strings.Contains(e.Message, "does not answer: forwarding to the nameservers it named before") {
						return true
					}
				}
				return false
			})
			closePromptly(t, s)
			h.answer()
			waitFor(t, promptly, "the file followed once its file system answers", func() bool {
				return firstA(ask(t, f, "b.example", dns.TypeA)) == "10.8.4.4"
			})
		})
	}
}

// A file system hung from the start: no reading ever, so forwarded names
// fail at once naming why; served names are answered.
func TestResolverFileHungBeforeAnyReading(t *testing.T) {
	h := newHungFS(t)
	h.hung.Store(true)
	path := resolvConf(t, t.TempDir(), "127.0.0.1")
	f := &Forwarder{ResolvConf: path, Local: localHost, statFile: func(p string) fileID { h.wait(); return statFile(p) }}
	s, server := serveLocal(t, f)
	for range 5 {
		if r := askPromptly(t, server, "host.docker.internal"); firstA(r) != "172.20.0.1" {
			t.Fatalf("a served name: %v", r)
		}
		if r := askPromptly(t, server, "a.example"); r.Rcode != dns.RcodeServerFailure {
			t.Fatalf("a forwarded name: %v", r)
		}
	}
	st := statsPromptly(t, f)
	if !strings.Contains(st.FileError, path+": its file system has not answered for") || st.LastFailure == nil ||
		!strings.Contains(st.LastFailure.Reason, "has not answered for") || !strings.Contains(st.LastFailure.Reason, "no nameserver is known yet") {
		t.Fatalf("stats: %+v, last failure %+v", st, st.LastFailure)
	}
	closePromptly(t, s)
}

// A read that times out (regularfile gives up on it, leaving it blocked
// in the background): the last reading stays in force, Stats says why,
// and the read is not tried again at every query (each try may leave one
// more behind) while the file seems unchanged.
func TestResolverFileReadTimesOut(t *testing.T) {
	port := freePort(t)
	startUpstream(t, "127.0.0.85", port, answerA("10.8.5.5"))
	link := resolvConf(t, t.TempDir(), "127.0.0.85")
	var timeouts atomic.Bool
	var reads atomic.Int32
	f := &Forwarder{ResolvConf: link, port: uint16(port), Local: localHost, readFile: func(p string) ([]byte, error) {
		if timeouts.Load() {
			reads.Add(1)
			return nil, &fs.PathError{Op: "read", Path: p, Err: fmt.Errorf("%w (%s)", regularfile.ErrTimeout, lookReadTimeout)}
		}
		return ReadFile(p)
	}}
	if r := ask(t, f, "a.example", dns.TypeA); firstA(r) != "10.8.5.5" {
		t.Fatalf("before: %v", r)
	}
	timeouts.Store(true)
	replaceTarget(t, link, "127.0.0.86")
	for range 20 {
		if r := ask(t, f, "a.example", dns.TypeA); firstA(r) != "10.8.5.5" {
			t.Fatalf("with the read timing out: %v (stats %+v)", r, f.Stats())
		}
	}
	// Stats waits for its look at most lookWait: on a loaded machine the
	// look (a stat) can outlive that, and Stats then says the file system
	// has not answered yet. What the look found is said once it ended;
	// the file unchanged, none of the looks meanwhile reads it again.
	want := link + ": the file system did not answer in time (2s); forwarding to the nameservers it named before"
	st := f.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.FileError != want && time.Now().Before(deadline); st = f.Stats() {
		time.Sleep(2 * time.Millisecond)
	}
	if st.FileError != want {
		t.Fatalf("stats: %q, want %q", st.FileError, want)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("the read that timed out was tried %d times in 21 looks", n)
	}
}

package hostports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/sirupsen/logrus"
)

// fakeNS is the engine's namespace and the distro as the watcher's loop
// sees them: the sockets that listen, whose process holds each, and the
// ports of the distro (taken ones, and those the watcher opened).
type fakeNS struct {
	mu       sync.Mutex
	socks    map[uint32]sock
	owner    map[uint32]string // inode -> the container whose process holds it
	dumpErr  error
	scanErr  error
	taken    map[string]bool // proto/addr
	open     map[string]bool // proto/addr
	dumps    int
	scans    int
	attempts map[string]int // proto/addr -> listens tried
}

func newFakeNS() *fakeNS {
	return &fakeNS{socks: map[uint32]sock{}, owner: map[uint32]string{}, taken: map[string]bool{}, open: map[string]bool{}, attempts: map[string]int{}}
}

// watcher is a Watcher of f.
func (f *fakeNS) watcher(log logrus.FieldLogger) *Watcher {
	w := &Watcher{Log: log}
	w.dump, w.owners, w.listen = f.dump, f.scan, f.listenIn
	w.ipv6 = func() string { return "" }
	w.setUp()
	return w
}

func (f *fakeNS) add(ino uint32, proto, addr string, owner string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := netip.MustParseAddrPort(addr)
	f.socks[ino] = sock{Proto: proto, Addr: a, Inode: ino}
	if owner != "" {
		f.owner[ino] = owner
	}
}

func (f *fakeNS) remove(ino uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.socks, ino)
	delete(f.owner, ino)
}

func (f *fakeNS) dump() ([]sock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	if f.dumpErr != nil {
		return nil, f.dumpErr
	}
	var out []sock
	for _, s := range f.socks {
		out = append(out, s)
	}
	return out, nil
}

// scan finds, as the real one does, only the sockets of the containers it
// is given.
func (f *fakeNS) scan(cs map[string]container) (map[uint32]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scans++
	if f.scanErr != nil {
		return nil, f.scanErr
	}
	owners := map[uint32]string{}
	for ino, id := range f.owner {
		if _, ok := cs[id]; ok {
			owners[ino] = id
		}
	}
	return owners, nil
}

type closer func() error

func (c closer) Close() error { return c() }

func (f *fakeNS) listenIn(proto, addr string, _ func(context.Context) (net.Conn, error), _ logrus.FieldLogger) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := proto + "/" + addr
	f.attempts[key]++
	if f.taken[key] || f.open[key] {
		return nil, &net.OpError{Op: "listen", Net: proto, Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	}
	f.open[key] = true
	return closer(func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.open, key)
		return nil
	}), nil
}

func (f *fakeNS) opened() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.open {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (f *fakeNS) counts() (dumps, scans int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dumps, f.scans
}

func run(t *testing.T, w *Watcher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

func start(w *Watcher, id, name string) {
	w.setContainers(func(cs map[string]container) map[string]container { cs[id] = container{Name: name, Pid: 42}; return cs })
}

func die(w *Watcher, id string) {
	w.setContainers(func(cs map[string]container) map[string]container { delete(cs, id); return cs })
}

// poll lets a poll period go by.
func poll() {
	time.Sleep(DefaultInterval)
	synctest.Wait()
}

func served(state []control.HostListener) []string {
	var out []string
	for _, h := range state {
		if h.Distro != "" {
			out = append(out, h.Proto+"/"+h.Distro+" <- "+h.Name+" "+h.Listen)
		} else {
			out = append(out, h.Proto+" "+h.Listen+": "+h.Reason)
		}
	}
	return out
}

// A host-network container's listeners are forwarded within a poll, and
// only theirs; a listener that closes, or whose container dies, is no
// longer; the processes are read only when a new socket appears; nothing
// is read while no such container runs.
func TestWatcherForwardsTheContainersListeners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := quietLog()
		f := newFakeNS()
		w := f.watcher(log)
		var changes atomic.Int32
		w.Changed = func() { changes.Add(1) }
		f.add(1, "tcp", "0.0.0.0:8080", "c1")
		f.add(2, "tcp", "127.0.0.1:2375", "") // dockerd's
		f.add(3, "udp", "[::]:53", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		want := []string{"tcp/127.0.0.1:8080", "udp/127.0.0.1:53", "udp/[::1]:53"}
		if got := f.opened(); !slices.Equal(got, want) {
			t.Fatalf("opened %v, want %v", got, want)
		}
		wantState := []string{"tcp/127.0.0.1:8080 <- web 0.0.0.0:8080", "udp/127.0.0.1:53 <- web [::]:53", "udp/[::1]:53 <- web [::]:53"}
		if got := served(w.State()); !slices.Equal(got, wantState) {
			t.Fatalf("state %q, want %q", got, wantState)
		}
		if changes.Load() == 0 {
			t.Error("Changed was not called")
		}

		// Nothing new: polled, but no process read.
		time.Sleep(time.Second)
		synctest.Wait()
		if dumps, scans := f.counts(); scans != 1 || dumps < 10 {
			t.Fatalf("%d dumps and %d scans in a second", dumps, scans)
		}

		// A new listener: forwarded at the next poll, after one scan.
		f.add(4, "tcp", "127.0.0.1:9000", "c1")
		poll()
		if got := f.opened(); !slices.Contains(got, "tcp/127.0.0.1:9000") {
			t.Fatalf("a new listener not forwarded within a poll: %v", got)
		}
		if _, scans := f.counts(); scans != 2 {
			t.Fatalf("%d scans", scans)
		}

		// A listener closes: so does its forward, at the next poll.
		f.remove(1)
		poll()
		if got := f.opened(); slices.Contains(got, "tcp/127.0.0.1:8080") {
			t.Fatalf("a closed listener still forwarded: %v", got)
		}

		// The container dies: everything closes at once, and no more polls.
		die(w, "c1")
		synctest.Wait()
		if got := f.opened(); len(got) != 0 || len(w.State()) != 0 {
			t.Fatalf("the dead container's forwards: %v %v", got, w.State())
		}
		before, _ := f.counts()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if dumps, _ := f.counts(); dumps != before {
			t.Fatalf("%d dumps without a host-network container", dumps-before)
		}
	})
}

// A container that listens before its start event is seen: its socket is
// no one's for as long as it is not known, then forwarded as soon as it
// is (the verdict is forgotten when the containers change), and not read
// again at every poll meanwhile.
func TestWatcherListenerSeenBeforeItsContainer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := quietLog()
		f := newFakeNS()
		w := f.watcher(log)
		f.add(1, "tcp", "127.0.0.1:80", "c1")
		f.add(2, "tcp", "127.0.0.1:81", "c2")
		start(w, "c1", "one")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := f.opened(); !slices.Equal(got, []string{"tcp/127.0.0.1:80"}) {
			t.Fatalf("opened %v", got)
		}
		if _, scans := f.counts(); scans != 1 {
			t.Fatalf("%d scans for one new socket", scans)
		}
		start(w, "c2", "two")
		synctest.Wait()
		if got := f.opened(); !slices.Equal(got, []string{"tcp/127.0.0.1:80", "tcp/127.0.0.1:81"}) {
			t.Fatalf("opened %v once the container is known", got)
		}
	})
}

// A port another program holds in the distro is reported in State and
// logged once, tried again every couple of seconds (not at every poll),
// and forwarded once free.
func TestWatcherTakenPort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, hook := quietLog()
		f := newFakeNS()
		f.taken["tcp/127.0.0.1:8080"] = true
		w := f.watcher(log)
		f.add(1, "tcp", "0.0.0.0:8080", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		want := []control.HostListener{{Container: "c1", Name: "web", Proto: "tcp", Listen: "0.0.0.0:8080",
			Reason: "127.0.0.1:8080 is taken in the distro by another program: not forwarded"}}
		if got := w.State(); !slices.Equal(got, want) {
			t.Fatalf("state %+v, want %+v", got, want)
		}
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		f.mu.Lock()
		attempts := f.attempts["tcp/127.0.0.1:8080"]
		delete(f.taken, "tcp/127.0.0.1:8080")
		f.mu.Unlock()
		if attempts != 5 { // at 0, 2, 4, 6 and 8 s
			t.Errorf("tried %d times in 10 s", attempts)
		}
		if got := warnings(hook); len(got) != 1 || !strings.Contains(got[0], "ss -ltnup 'sport = :8080'") {
			t.Errorf("warned %q", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := served(w.State()); !slices.Equal(got, []string{"tcp/127.0.0.1:8080 <- web 0.0.0.0:8080"}) {
			t.Fatalf("once free: %v", got)
		}
	})
}

// Off closes every forward and stops the polls; on again forwards again;
// Run's end closes every forward.
func TestWatcherOffAndOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := quietLog()
		f := newFakeNS()
		w := f.watcher(log)
		f.add(1, "tcp", "127.0.0.1:80", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		synctest.Wait()
		w.SetOn(false)
		synctest.Wait()
		if got := f.opened(); len(got) != 0 || len(w.State()) != 0 {
			t.Fatalf("off: %v %v", got, w.State())
		}
		before, _ := f.counts()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if dumps, _ := f.counts(); dumps != before {
			t.Fatalf("%d dumps while off", dumps-before)
		}
		w.SetOn(true)
		synctest.Wait()
		if got := f.opened(); len(got) != 1 {
			t.Fatalf("on again: %v", got)
		}
		stop()
		if got := f.opened(); len(got) != 0 {
			t.Fatalf("open after Run returned: %v", got)
		}
	})
}

// A dump that fails closes nothing (it says nothing of the listeners),
// and is logged once.
func TestWatcherDumpFailureKeepsForwards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, hook := quietLog()
		f := newFakeNS()
		w := f.watcher(log)
		f.add(1, "tcp", "127.0.0.1:80", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		f.mu.Lock()
		f.dumpErr = errors.New("socket dump: no buffer space available")
		f.mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := f.opened(); len(got) != 1 {
			t.Fatalf("a failed dump closed %v", got)
		}
		if got := warnings(hook); len(got) != 1 {
			t.Fatalf("warned %q", got)
		}
		f.mu.Lock()
		f.dumpErr = nil
		delete(f.socks, 1)
		f.mu.Unlock()
		poll()
		if got := f.opened(); len(got) != 0 {
			t.Fatalf("dumping again: %v", got)
		}
	})
}

// A container whose processes cannot be read is tried again after a
// while, not at every poll, and its listeners forwarded then.
func TestWatcherScanFailureTriedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, hook := quietLog()
		f := newFakeNS()
		f.scanErr = fmt.Errorf("container c1: %w", syscall.ENOENT)
		w := f.watcher(log)
		f.add(1, "tcp", "127.0.0.1:80", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		if _, scans := f.counts(); scans != 1 || len(f.opened()) != 0 || len(warnings(hook)) != 1 {
			t.Fatalf("%d scans, opened %v, warned %q", scans, f.opened(), warnings(hook))
		}
		f.mu.Lock()
		f.scanErr = nil
		f.mu.Unlock()
		time.Sleep(retryEvery)
		synctest.Wait()
		if got := f.opened(); len(got) != 1 {
			t.Fatalf("not forwarded once readable: %v", got)
		}
	})
}

// Without an IPv6 loopback in the distro, the IPv4 half of a dual-stack
// listener is forwarded and State says why the other is not.
func TestWatcherWithoutIPv6(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _ := quietLog()
		f := newFakeNS()
		w := f.watcher(log)
		w.ipv6 = func() string { return "the distro has no IPv6 loopback: not forwarded" }
		f.add(1, "tcp", "[::]:80", "c1")
		start(w, "c1", "web")
		stop := run(t, w)
		defer stop()
		synctest.Wait()
		want := []string{"tcp [::]:80: the distro has no IPv6 loopback: not forwarded", "tcp/127.0.0.1:80 <- web [::]:80"}
		if got := served(w.State()); !slices.Equal(got, want) || !slices.Equal(f.opened(), []string{"tcp/127.0.0.1:80"}) {
			t.Fatalf("state %q, opened %v", got, f.opened())
		}
	})
}

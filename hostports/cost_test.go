package hostports

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// costSetup is n host-network containers in a namespace, each listening
// on a TCP and a UDP port, beside n established connections (which the
// dump must not walk), all forwarded (to nothing: the distro's ports are
// not what is measured). Its Watcher has seen them all once.
func costSetup(t testing.TB, n int) (w *Watcher, polls *atomic.Int64) {
	ns, nsPath := newNetns(t)
	owners := map[uint32]string{}
	var closers []io.Closer
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	cs := map[string]container{}
	if err := network.InNamespace(ns, func() {
		for i := range n {
			id := fmt.Sprintf("container%04d", i)
			cs[id] = container{Name: id, Pid: i + 1}
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Error(err)
				return
			}
			u, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Error(err)
				return
			}
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			a, err := l.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			closers = append(closers, l, u, c, a)
			owners[inode(t, l.(*net.TCPListener))] = id
			owners[inode(t, u.(*net.UDPConn))] = id
		}
	}); err != nil || t.Failed() {
		t.Fatalf("the namespace's sockets: %v", err)
	}
	log, _ := quietLog()
	polls = new(atomic.Int64)
	w = &Watcher{Namespace: nsPath, Log: log}
	w.dump = w.dumpNamespace
	w.count = func(out []byte) ([]byte, error) {
		polls.Add(1)
		return w.countNamespace(out)
	}
	w.owners = func(map[string]container) (map[uint32]string, error) { return owners, nil }
	w.listen = func(string, string, func(context.Context) (net.Conn, error), logrus.FieldLogger) (io.Closer, error) {
		return closer(func() error { return nil }), nil
	}
	w.setUp()
	w.setContainers(func(map[string]container) map[string]container { return cs })
	return w, polls
}

// cpuTime is the CPU time this process used so far.
func cpuTime(t testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBenchWatcherIdle is `make bench`'s figure for the watcher alone:
// while nothing changes, what the watcher of 200 host-network containers
// costs (target: at most 1% of a core), a poll every 100 ms reading the
// namespace's listening sockets and finding them all known. A figure,
// not an assert: these machines are noisy (bench/reach_test.go measures
// ddinit run as a whole, against the setting off).
func TestBenchWatcherIdle(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") != "1" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	const n = 200
	w, polls := costSetup(t, n)
	changed := make(chan struct{}, 1)
	w.Changed = func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	waitState(t, w, changed, "every listener forwarded", func(s []control.HostListener) bool { return len(s) == 2*n })
	const span = 5 * time.Second
	cpu, p, begin := cpuTime(t), polls.Load(), time.Now()
	time.Sleep(span) // the measure: what the process spends meanwhile
	cpu, p, wall := cpuTime(t)-cpu, polls.Load()-p, time.Since(begin)
	share := 100 * cpu.Seconds() / wall.Seconds()
	t.Logf("BENCH host-network watcher idle, %d containers (%d listening sockets, %d connections): %.2f%% of a core (target <= 1%%), %v of CPU a poll (%d polls in %v)",
		n, 2*n, n, share, cpu/time.Duration(max(p, 1)), p, wall.Round(time.Millisecond))
	if len(w.State()) != 2*n {
		t.Errorf("%d listeners in State", len(w.State()))
	}
}

// BenchmarkPoll is one poll with 200 host-network containers whose
// sockets are all known; at 100 ms a poll, ns/op / 1e6 is the share of a
// core in percent.
func BenchmarkPoll(b *testing.B) {
	w, _ := costSetup(b, 200)
	defer w.idle()
	w.mu.Lock()
	cs, gen := w.containers, w.gen
	w.mu.Unlock()
	w.ns, w.nsErr = mustNetns(b, w.Namespace)
	w.poll(cs, gen, time.Now())
	if len(w.State()) != 400 {
		b.Fatalf("%d listeners", len(w.State()))
	}
	for b.Loop() {
		w.poll(cs, gen, time.Now())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(DefaultInterval.Nanoseconds())*100, "%core")
}

// mustNetns opens the namespace at path, closed when the test ends.
func mustNetns(t testing.TB, path string) (netns.NsHandle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns, nil
}

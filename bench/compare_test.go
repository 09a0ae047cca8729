package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// build is one ddinit binary of a comparison and what was measured of it,
// one value per round.
type build struct {
	name, binary, desc string
	warmData           string // its own warm data store
	cold, warm, wake   []time.Duration
	keepAlive, perConn []time.Duration
	colds, boots       []map[string]float64 // boot timelines (cold, warm), ms
	wakes              []map[string]float64
}

// TestCompareBaseline is `make bench-compare`: this tree's ddinit (new:
// DDINIT_BINARY or bin/ddinit) against a baseline build (old:
// DDINIT_BASELINE_BINARY, which make bench-compare builds from BASELINE),
// both booting the same images, in ROUNDS rounds that alternate which
// goes first. Each round, each binary:
//
//   - boots cold: a new data store (the images verified, copied and
//     extracted), to the first _ping answered through the exposed socket;
//     then, after a second to settle, _ping round trips through that
//     socket, on one keep-alive connection and on a new connection each;
//   - boots warm: its own data store, booted once before the first round
//     and again each round, to the first _ping; then, once the engine has
//     stopped for being idle (--idle-stop), the wake: the first _ping
//     answered after the idle stop.
//
// It prints the medians of each side and their ratio (new/old), each
// round's boots and wakes, and the two sides' boot (cold, warm) and wake
// timelines (/status) side by side: where the time goes if one is slower.
// Nothing is asserted about time.
func TestCompareBaseline(t *testing.T) {
	requireBench(t)
	oldBinary := os.Getenv("DDINIT_BASELINE_BINARY")
	if oldBinary == "" {
		t.Skip("set DDINIT_BASELINE_BINARY to the build to compare with (make bench-compare builds it)")
	}
	harness.RequireEnvironment(t)
	if _, err := os.Stat(oldBinary); err != nil {
		t.Fatalf("the baseline binary: %v", err)
	}
	rounds := 10
	if v := os.Getenv("DDINIT_BENCH_ROUNDS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			rounds = n
		}
	}
	sides := []*build{
		{name: "new", binary: harness.Binary, desc: os.Getenv("DDINIT_NEW_DESC")},
		{name: "old", binary: oldBinary, desc: os.Getenv("DDINIT_BASELINE_DESC")},
	}
	for _, b := range sides {
		// The warm store: booted once, as a machine's is before its next
		// boot.
		b.warmData, _ = harness.NewDirs(t)
		in := harness.Start(t, harness.Options{Binary: b.binary, DataDir: b.warmData, Extra: asDeployed})
		in.WaitPing(2 * time.Minute)
		in.Stop()
	}
	for round := range rounds {
		order := sides
		if round%2 == 1 {
			order = []*build{sides[1], sides[0]}
		}
		for _, b := range order {
			measureCold(t, b)
		}
		for _, b := range order {
			measureWarmAndWake(t, b)
		}
	}
	printComparison(t, rounds, sides[0], sides[1])
}

// measureCold boots b on a new data store, measures the boot and the
// round trips through the exposed socket, and removes the store.
func measureCold(t *testing.T, b *build) {
	t.Helper()
	data, err := os.MkdirTemp("/tmp", "ddinit-compare-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(data)
	// No writeback pending from the last boot's copies and extraction.
	syscall.Sync()
	in := harness.Start(t, harness.Options{Binary: b.binary, DataDir: data, Extra: asDeployed})
	b.cold = append(b.cold, in.WaitPing(2*time.Minute))
	b.colds = append(b.colds, sinceEvent(in.BootTimeline(), "ddinit run started"))
	time.Sleep(time.Second) // the boot settles
	b.keepAlive = append(b.keepAlive, pingLatency(t, in.Sock, 2000, true))
	b.perConn = append(b.perConn, pingLatency(t, in.Sock, 300, false))
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("%s: ddinit exited %d after the cold boot", b.name, code)
	}
}

// measureWarmAndWake boots b on its warm store, measures the boot, lets
// the engine stop for being idle and measures its wake.
func measureWarmAndWake(t *testing.T, b *build) {
	t.Helper()
	syscall.Sync()
	in := harness.Start(t, harness.Options{Binary: b.binary, DataDir: b.warmData, Extra: append([]string{"--idle-stop", "2s"}, asDeployed...)})
	b.warm = append(b.warm, in.WaitPing(time.Minute))
	b.boots = append(b.boots, sinceEvent(in.BootTimeline(), "ddinit run started"))
	ns := in.PidNS()
	in.WaitIdle(ns, time.Minute)
	time.Sleep(time.Second) // the stop settles
	begin := time.Now()
	for harness.Ping(in.Sock) != nil {
		if time.Since(begin) > time.Minute {
			t.Fatalf("%s: no answer through the exposed socket after the idle stop", b.name)
		}
	}
	b.wake = append(b.wake, time.Since(begin))
	harness.WaitUntil(t, 10*time.Second, "the wake's timeline", func() bool {
		var st control.Status
		_, body := in.Get(http.MethodGet, "/status")
		json.Unmarshal([]byte(body), &st)
		if len(st.WakeTimeline) == 0 || !strings.HasPrefix(st.WakeTimeline[len(st.WakeTimeline)-1].Event, "engine woken") {
			return false
		}
		b.wakes = append(b.wakes, sinceEvent(st.WakeTimeline, st.WakeTimeline[0].Event))
		return true
	})
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("%s: ddinit exited %d after the wake", b.name, code)
	}
}

// pingLatency is the median time of n _ping round trips through sock: on
// one keep-alive connection, or each on a new connection.
func pingLatency(t *testing.T, sock string, n int, keepAlive bool) time.Duration {
	t.Helper()
	var c net.Conn
	var br *bufio.Reader
	var d []time.Duration
	for range n {
		start := time.Now()
		if c == nil {
			var err error
			if c, err = net.Dial("unix", sock); err != nil {
				t.Fatal(err)
			}
			br = bufio.NewReader(c)
		}
		io.WriteString(c, "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("_ping through %s: %v", sock, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !keepAlive {
			c.Close()
			c = nil
		}
		d = append(d, time.Since(start))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("_ping through %s: %s", sock, resp.Status)
		}
	}
	if c != nil {
		c.Close()
	}
	return median(d)
}

// printComparison prints the table: each measure's median for both, their
// ratio and the spread of the rounds' own ratios.
func printComparison(t *testing.T, rounds int, n, o *build) {
	t.Logf("BENCH before/after, %d rounds alternating which goes first; medians of the rounds, ratio new/old (spread: the lowest and highest of the rounds' own ratios)", rounds)
	t.Logf("BENCH   new: %s (%s)", n.desc, n.binary)
	t.Logf("BENCH   old: %s (%s)", o.desc, o.binary)
	t.Logf("BENCH   %-50s %10s %10s %8s %11s", "measure", "new", "old", "new/old", "spread")
	row := func(what string, a, b []time.Duration, unit time.Duration) {
		ma, mb := median(a), median(b)
		verdict := ""
		if r := float64(ma) / float64(mb); r > 1.05 {
			verdict = fmt.Sprintf("  (new is %.0f%% slower)", (r-1)*100)
		}
		t.Logf("BENCH   %-50s %10s %10s %8.3f %11s%s", what, fmtDuration(ma, unit), fmtDuration(mb, unit), float64(ma)/float64(mb), ratioSpread(a, b), verdict)
	}
	row("boot to _ping, cold (new data store)", n.cold, o.cold, time.Millisecond)
	row("boot to _ping, warm (its own data store)", n.warm, o.warm, time.Millisecond)
	row("wake after an idle stop, to _ping", n.wake, o.wake, time.Millisecond)
	row("_ping round trip, exposed socket, keep-alive", n.keepAlive, o.keepAlive, time.Microsecond)
	row("_ping round trip, exposed socket, new connection", n.perConn, o.perConn, time.Microsecond)
	t.Logf("BENCH   each round (ms; new first, then old first, in turn):")
	perRound := func(what string, a, b []time.Duration) {
		t.Logf("BENCH     %-14s new %s", what, msList(a))
		t.Logf("BENCH     %-14s old %s", "", msList(b))
	}
	perRound("cold boot", n.cold, o.cold)
	perRound("warm boot", n.warm, o.warm)
	perRound("wake", n.wake, o.wake)
	printSideBySide(t, "cold boot timeline, median ms since ddinit run started", "new", "old", n.colds, o.colds)
	printSideBySide(t, "warm boot timeline, median ms since ddinit run started", "new", "old", n.boots, o.boots)
	printSideBySide(t, "wake timeline, median ms since the wake began", "new", "old", n.wakes, o.wakes)
}

func msList(d []time.Duration) string {
	var s []string
	for _, v := range d {
		s = append(s, fmt.Sprintf("%.0f", float64(v)/float64(time.Millisecond)))
	}
	return strings.Join(s, " ")
}

func fmtDuration(d, unit time.Duration) string {
	if unit == time.Microsecond {
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

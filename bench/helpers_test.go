package bench

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/timeline"
)

// requireBench skips t unless the benchmarks are asked for
// (DDINIT_BENCH=1: make bench, make bench-compare).
func requireBench(t *testing.T) {
	t.Helper()
	if os.Getenv("DDINIT_BENCH") != "1" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
}

// asDeployed measures ddinit as it runs on a machine: the tests log at
// debug level, the distro's config at info.
var asDeployed = []string{"--log-level", "info"}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// ratioSpread is the lowest and highest of the rounds' ratios.
func ratioSpread(a, b []time.Duration) string {
	var r []float64
	for i := range a {
		r = append(r, float64(a[i])/float64(b[i]))
	}
	slices.Sort(r)
	return fmt.Sprintf("%.2f–%.2f", r[0], r[len(r)-1])
}

// eventTimes is a timeline as event → ms since its first event.
func eventTimes(steps []timeline.Step) map[string]float64 {
	m := map[string]float64{}
	for _, s := range steps {
		m[s.Event] = s.AtMs
	}
	return m
}

// medianMs is the median of an event's time over the rounds that saw it.
func medianMs(rounds []map[string]float64, event string) (float64, bool) {
	var v []float64
	for _, r := range rounds {
		if ms, ok := r[event]; ok {
			v = append(v, ms)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	return v[len(v)/2], true
}

// printSideBySide prints two sets of timelines as one table: each
// event's median time in the first, in the order of the first, and in the
// second where it has the event.
func printSideBySide(t *testing.T, title, first, second string, ours, theirs []map[string]float64) {
	var events []string
	for _, r := range ours {
		for e := range r {
			if !slices.Contains(events, e) {
				events = append(events, e)
			}
		}
	}
	slices.SortFunc(events, func(a, b string) int {
		x, _ := medianMs(ours, a)
		y, _ := medianMs(ours, b)
		return cmpFloat(x, y)
	})
	t.Logf("BENCH %s:", title)
	t.Logf("BENCH   %9s %9s  %s", first, second, "event")
	for _, e := range events {
		o, _ := medianMs(ours, e)
		b := "—"
		if v, ok := medianMs(theirs, e); ok {
			b = fmt.Sprintf("%.1f", v)
		}
		t.Logf("BENCH   %9.1f %9s  %s", o, b, e)
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// memKB reads one field (Rss:, Pss:) of a process's smaps_rollup.
func memKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

// sinceEvent is a timeline as event → ms since one of its events.
func sinceEvent(steps []timeline.Step, from string) map[string]float64 {
	m := eventTimes(steps)
	zero := m[from]
	for e := range m {
		m[e] -= zero
	}
	return m
}

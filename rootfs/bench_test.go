package rootfs

import (
	"fmt"
	"github.com/ddinit/ddinit/internal/testutil"
	"github.com/ddinit/ddinit/iso9660"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// TestBenchReport is `make bench` for this package: every figure is printed
// next to a baseline measured in the same run, as a ratio. It asserts
// nothing about time; it only runs when DDINIT_BENCH is set.
func TestBenchReport(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") == "" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	testutil.RequiresRoot(t)
	ddinit, err := filepath.Abs("../bin/ddinit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ddinit); err != nil {
		t.Fatal("bin/ddinit is not built (make build)")
	}
	testutil.RequireTool(t, "bsdtar")
	work, err := os.MkdirTemp(filepath.Join("..", "build"), "bench-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	runs := 5
	if v := os.Getenv("DDINIT_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}

	pack := filepath.Join("..", "build", "docker.iso")
	gosrc := filepath.Join(work, "gosrc.iso")
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-joliet-long", "-o", gosrc, filepath.Join(runtime.GOROOT(), "src")).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, out)
	}
	// Extraction, into memory (tmpfs: what the code costs) and onto this
	// machine's disk (what a data store costs here, where writeback and the
	// disk's throttling dominate and the figures swing run to run).
	mem := filepath.Join(work, "tmpfs")
	os.Mkdir(mem, 0o755)
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=8g"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(mem, unix.MNT_DETACH)
	for _, target := range []struct {
		name, dir string
		runs      int
	}{{"tmpfs", mem, runs}, {"disk", work, max(runs/2, 1)}} {
		for _, img := range []struct{ name, path string }{{"version pack (build/docker.iso)", pack}, {"many small files (Go's src)", gosrc}} {
			n := countEntries(t, img.path)
			ours, theirs := compareCommands(t, target.runs, target.dir,
				func(dir string) *exec.Cmd { return exec.Command(ddinit, "iso", "extract", img.path, dir) },
				func(dir string) *exec.Cmd {
					os.Mkdir(dir, 0o755)
					return exec.Command("bsdtar", "-xf", img.path, "-C", dir)
				})
			report(t, fmt.Sprintf("extract %s, %d entries, onto %s", img.name, n, target.name), ours, theirs, "bsdtar -xf", "target <= 0.50, never > 1")
		}
	}

	// sha256: ours against coreutils on the same (page-cached) bytes.
	st, _ := os.Stat(pack)
	HashFile(pack)
	var goTimes, coreTimes []time.Duration
	for range runs {
		start := time.Now()
		if _, _, err := HashFile(pack); err != nil {
			t.Fatal(err)
		}
		goTimes = append(goTimes, time.Since(start))
		start = time.Now()
		if out, err := exec.Command("sha256sum", pack).CombinedOutput(); err != nil {
			t.Fatalf("sha256sum: %v %s", err, out)
		}
		coreTimes = append(coreTimes, time.Since(start))
	}
	g, c := median(goTimes), median(coreTimes)
	t.Logf("BENCH sha256 of %d MB: %.2f GB/s, sha256sum %.2f GB/s, time ratio %.2f (target >= 1 GB/s)",
		st.Size()>>20, gbps(st.Size(), g), gbps(st.Size(), c), float64(g)/float64(c))

	// Cold path: copy from the source and hash in one pass.
	var copyTimes []time.Duration
	for i := range runs {
		dst := filepath.Join(work, fmt.Sprintf("copy-%d.iso", i))
		start := time.Now()
		if _, _, err := CopyAndHash(dst, pack); err != nil {
			t.Fatal(err)
		}
		copyTimes = append(copyTimes, time.Since(start))
		os.Remove(dst)
	}
	t.Logf("BENCH cold copy+sha256 of %d MB (synced): %.2f GB/s, %.2fx the hash-only time",
		st.Size()>>20, gbps(st.Size(), median(copyTimes)), float64(median(copyTimes))/float64(g))

	// Warm boot: rootfs preparation when the cache holds both images, against
	// the floor of mounting the same overlay by hand.
	base := filepath.Join("..", "build", "docker-desktop.iso")
	opts := PrepareOptions{
		CacheDir: filepath.Join(work, "data", "isocache"),
		Images:   []Source{{Name: "base", Path: base}, {Name: "version pack", Path: pack}},
		RunDir:   filepath.Join(work, "run"),
		Target:   filepath.Join(work, "run", "rootfs"),
		Mode:     ModeUserspace,
		Log:      quietLog(),
	}
	coldStart := time.Now()
	root, err := Prepare(opts)
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(coldStart)
	root.Close()
	var warm, floor []time.Duration
	for range max(runs*4, 20) {
		start := time.Now()
		root, err := Prepare(opts)
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, time.Since(start))
		if !root.Layers[0].CacheHit || !root.Layers[1].CacheHit {
			t.Fatal("warm preparation missed the cache")
		}
		lowers := []string{root.Layers[0].Tree, root.Layers[1].Tree}
		root.Close()
		start = time.Now()
		made, err := mountOverlay(lowers, opts.RunDir, opts.Target)
		if err != nil {
			t.Fatal(err)
		}
		floor = append(floor, time.Since(start))
		for i := len(made) - 1; i >= 0; i-- {
			mounts.UnmountPath(made[i], false)
		}
	}
	t.Logf("BENCH rootfs preparation, cold (verify + extract both images, synced): %v", cold.Round(time.Millisecond))
	t.Logf("BENCH rootfs preparation, warm cache: %v (target <= 10ms), bare overlay mount %v, ratio %.2f",
		median(warm).Round(10*time.Microsecond), median(floor).Round(10*time.Microsecond), float64(median(warm))/float64(median(floor)))
}

func countEntries(t *testing.T, path string) int {
	f, err := iso9660.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tree, err := f.Walk()
	if err != nil {
		t.Fatal(err)
	}
	return len(tree.Entries)
}

// compareCommands runs two commands alternately, each into a fresh
// directory, after one warm-up each, and returns their median times.
// Trees are removed only at the end: deleting between runs makes the next
// run pay for the deletion's writeback.
func compareCommands(t *testing.T, runs int, work string, ours, theirs func(dir string) *exec.Cmd) (time.Duration, time.Duration) {
	var a, b []time.Duration
	var dirs []string
	for i := range runs + 1 {
		for j, mk := range []func(string) *exec.Cmd{ours, theirs} {
			dir := filepath.Join(work, fmt.Sprintf("x-%d-%d", i, j))
			dirs = append(dirs, dir)
			cmd := mk(dir)
			// Start each run with no writeback pending from the last.
			syscall.Sync()
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", strings.Join(cmd.Args, " "), err, out)
			}
			d := time.Since(start)
			if i == 0 {
				continue
			}
			if j == 0 {
				a = append(a, d)
			} else {
				b = append(b, d)
			}
		}
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	syscall.Sync()
	return median(a), median(b)
}

func report(t *testing.T, what string, ours, base time.Duration, baseName, target string) {
	t.Logf("BENCH %s: ours %v, %s %v, ratio %.2f (%s)", what, ours.Round(time.Millisecond), baseName, base.Round(time.Millisecond), float64(ours)/float64(base), target)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func gbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e9 }

package clitools

// Attacks on the offer (Publish, Withdraw) in a mount namespace mounted
// as WSL's (root: DDINIT_TEST_ROOT=1).

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ddinit/ddinit/internal/testutil"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// Another distro (every distro's root writes /mnt/wsl) puts a folder
// where "current" goes: Withdraw still takes every version's bind down.
func TestWithdrawPastAPlantedCurrentFolder(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	if err := Publish(shared, testFolder, toolsTree(t, "one"), "aaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(shared, testFolder)
	os.Remove(filepath.Join(folder, Current))
	os.MkdirAll(filepath.Join(folder, Current, "x"), 0o755)
	err := Withdraw(shared, testFolder)
	d, _ := mounts.OpenDir(folder)
	defer d.Close()
	if d.MountedAt("aaaaaaaaaaaa") {
		t.Errorf("after Withdraw (%v) the version is still mounted", err)
	}
}

// A distro running docker during a change sees the old files or the new
// ones, never none: a lookup that read current's old target just before
// the rename still finds it (the previous version stays bound until the
// next change).
func TestSwitchNeverShowsNone(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	trees := []string{toolsTree(t, "one"), toolsTree(t, "two")}
	versions := []string{"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
	if err := Publish(shared, testFolder, trees[0], versions[0]); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(shared, testFolder, "current/bin/docker")
	var stop atomic.Bool
	var misses, reads atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				reads.Add(1)
				if err != nil {
					misses.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				unix.Close(fd)
			}
		}()
	}
	for i := range 1500 {
		if err := Publish(shared, testFolder, trees[(i+1)%2], versions[(i+1)%2]); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := misses.Load(); n > 0 {
		t.Errorf("%d of %d opens of current/bin/docker failed during 1500 switches (first: %v)", n, reads.Load(), firstErr.Load())
	}
}

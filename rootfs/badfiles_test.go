package rootfs

import (
	"errors"
	"github.com/ddinit/ddinit/iso9660"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/regularfile"
)

// returnsWithin runs f and fails the test when it has not returned after
// d: what it guards against is a boot that waits for ever.
func returnsWithin(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s has not returned after %s", what, d)
		return nil
	}
}

// notAFile are the things an image path or its sidecar may name instead
// of a file, each with what the error must say.
var notAFile = map[string]struct {
	make func(t *testing.T, path string)
	says string
}{
	"a FIFO": {func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}, "a FIFO"},
	"a directory": {func(t *testing.T, path string) { os.Mkdir(path, 0o755) }, "a directory"},
	"a symlink loop": {func(t *testing.T, path string) {
		os.Symlink(filepath.Base(path), path)
	}, "too many levels of symbolic links"},
	"a character device": {func(t *testing.T, path string) {
		os.Symlink("/dev/zero", path) // endless: read whole, it would never end
	}, "a character device"},
}

// An image path that is not a regular file is a clear error at once from
// everything that opens an image: hashing, copying into the cache, the
// reader, the loop mount, and a boot's Ensure.
func TestImagePathThatIsNoFile(t *testing.T) {
	for name, bad := range notAFile {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "docker.iso")
			bad.make(t, img)
			digest := strings.Repeat("ab", 32)
			os.WriteFile(img+SidecarSuffix, []byte(digest+"  docker.iso\n"), 0o644)
			c := openTestCache(t, filepath.Join(dir, "isocache"))
			for what, open := range map[string]func() error{
				"HashFile":    func() error { _, _, err := HashFile(img); return err },
				"CopyAndHash": func() error { _, _, err := CopyAndHash(filepath.Join(dir, "copy"), img); return err },
				"OpenFile":    func() error { _, err := iso9660.OpenFile(img); return err },
				"LoopMount":   func() error { return LoopMount(img, dir, "iso9660") },
				"Ensure": func() error {
					_, err := c.Ensure(Source{Name: "version pack", Path: img}, false)
					return err
				},
			} {
				err := returnsWithin(t, time.Second, what, open)
				if err == nil || !strings.Contains(err.Error(), img) || !strings.Contains(err.Error(), bad.says) {
					t.Errorf("%s: %v, want %s named as %q", what, err, img, bad.says)
				}
			}
			if names, _ := readDirNames(filepath.Join(dir, "isocache")); len(names) != 1 {
				t.Errorf("the cache after the failure: %v", names)
			}
		})
	}
}

// A sidecar that is not a regular file of a digest's size is a clear
// error at once, naming it.
func TestSidecarThatIsNoFile(t *testing.T) {
	cases := map[string]struct {
		make func(t *testing.T, path string)
		says string
	}{
		"huge": {func(t *testing.T, path string) {
			os.WriteFile(path, nil, 0o644)
			os.Truncate(path, 1<<40)
		}, "larger than"},
	}
	for name, bad := range notAFile {
		cases[name] = bad
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img, _ := testImage(t, dir, "docker.iso", map[string]string{"a": "b"})
			sidecar := img + SidecarSuffix
			os.Remove(sidecar)
			bad.make(t, sidecar)
			c := openTestCache(t, filepath.Join(dir, "isocache"))
			err := returnsWithin(t, time.Second, "Ensure", func() error {
				_, err := c.Ensure(Source{Name: "version pack", Path: img}, false)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), sidecar) || !strings.Contains(err.Error(), bad.says) || !strings.Contains(err.Error(), "version pack") {
				t.Fatalf("%v, want %s named as %q", err, sidecar, bad.says)
			}
		})
	}
}

// An image whose source stops answering midway: the copy fails with a
// timeout and its pipeline (hash and write stages) ends with it.
func TestCopyOfAStalledSourceEnds(t *testing.T) {
	r, w, err := os.Pipe() // a writer that stops writing plays the hung drive
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	go w.Write(make([]byte, 3*hashChunk+5)) // more than the pipe holds
	var n int64
	err = returnsWithin(t, 10*time.Second, "copyAndHash", func() error {
		var err error
		_, n, err = copyAndHash(io.Discard, regularfile.ReaderWithin(r, 100*time.Millisecond))
		return err
	})
	if !errors.Is(err, regularfile.ErrTimeout) || n != 3*hashChunk+5 {
		t.Fatalf("%v after %d bytes", err, n)
	}
}

// The cache's own records that are not files (a FIFO, a folder) are like
// records that do not parse: the entry is made again, the record of boots
// starts anew; nothing waits.
func TestCacheRecordsThatAreNoFiles(t *testing.T) {
	for name, bad := range notAFile {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			img, digest := testImage(t, dir, "base.iso", map[string]string{"f": "content"})
			cacheDir := filepath.Join(dir, "isocache")
			c := openTestCache(t, cacheDir)
			if _, err := c.Ensure(Source{Name: "base", Path: img}, false); err != nil {
				t.Fatal(err)
			}
			meta := filepath.Join(cacheDir, digest, entryMeta)
			os.Remove(meta)
			bad.make(t, meta)
			state := filepath.Join(cacheDir, stateFile)
			os.Remove(state)
			bad.make(t, state)
			var l Layer
			err := returnsWithin(t, time.Second, "Ensure", func() error {
				var err error
				l, err = c.Ensure(Source{Name: "base", Path: img}, false)
				return err
			})
			if err != nil || l.CacheHit {
				t.Fatalf("%+v %v, want the entry made again", l, err)
			}
			err = returnsWithin(t, time.Second, "Collect", func() error { return c.Collect([]string{digest}) })
			if st, _ := os.Lstat(state); err == nil && !st.Mode().IsRegular() {
				t.Fatalf("Collect succeeded but the record of boots is still %v", st.Mode())
			}
			if ok, err := entryComplete(filepath.Join(cacheDir, digest), digest); !ok || err != nil {
				t.Fatalf("the entry after the rebuild: %v %v", ok, err)
			}
		})
	}
}

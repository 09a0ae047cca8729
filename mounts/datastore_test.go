package mounts

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notAFolder are the things a layout folder of the data store may be
// instead, each with what the boot must say it is.
var notAFolder = map[string]struct {
	make func(t *testing.T, path string)
	says string
}{
	"a regular file": {func(t *testing.T, path string) {
		os.WriteFile(path, []byte("x"), 0o644)
	}, "a regular file"},
	"a symlink loop": {func(t *testing.T, path string) {
		os.Symlink(filepath.Base(path), path)
	}, "a symbolic link loop"},
	"a dangling symlink": {func(t *testing.T, path string) {
		os.Symlink("/nowhere/at/all", path)
	}, "a symbolic link to /nowhere/at/all, which does not exist"},
	"a symlink to a file": {func(t *testing.T, path string) {
		os.WriteFile(path+".target", []byte("x"), 0o644)
		os.Symlink(path+".target", path)
	}, ".target, a regular file"},
	"a FIFO": {func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}, "a FIFO"},
}

func openWithin(t *testing.T, dir string) (*DataStore, error) {
	t.Helper()
	type opened struct {
		ds  *DataStore
		err error
	}
	done := make(chan opened, 1)
	go func() {
		ds, err := OpenDataStore(dir)
		done <- opened{ds, err}
	}()
	select {
	case o := <-done:
		return o.ds, o.err
	case <-time.After(5 * time.Second):
		t.Fatal("OpenDataStore has not returned after 5s")
		return nil, nil
	}
}

// A configuration folder of the data store (or etc above two of them)
// that is not a folder is kept aside as it was, a new folder made, and
// the boot told; the rest of the store is untouched.
func TestOpenDataStoreSetsAsideConfigurationThatIsNoFolder(t *testing.T) {
	for _, entry := range []string{"etc/ddinit", "etc/docker", "log", "isocache", "etc"} {
		for name, bad := range notAFolder {
			t.Run(entry+" is "+name, func(t *testing.T) {
				dir := t.TempDir()
				os.MkdirAll(filepath.Join(dir, "var/lib/docker"), 0o755)
				os.WriteFile(filepath.Join(dir, "var/lib/docker/volume"), []byte("data"), 0o644)
				path := filepath.Join(dir, entry)
				os.MkdirAll(filepath.Dir(path), 0o755)
				bad.make(t, path)
				was, _ := os.Lstat(path)
				ds, err := openWithin(t, dir)
				if err != nil {
					t.Fatalf("the store did not open: %v", err)
				}
				if len(ds.Recovered) != 1 {
					t.Fatalf("recovered: %+v", ds.Recovered)
				}
				r := ds.Recovered[0]
				if r.File != path || !strings.Contains(r.Reason, bad.says) || !strings.HasPrefix(r.KeptAs, path+".bad-") || !strings.Contains(r.Using, "new, empty") {
					t.Fatalf("recovered: %+v, want %s named as %q", r, path, bad.says)
				}
				if kept, err := os.Lstat(r.KeptAs); err != nil || kept.Mode().Type() != was.Mode().Type() {
					t.Fatalf("kept as %s: %v %v, was %v", r.KeptAs, kept, err, was.Mode().Type())
				}
				for _, d := range Layout {
					if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
						t.Fatalf("%s after the open: %v", d, err)
					}
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "var/lib/docker/volume")); string(b) != "data" {
					t.Fatal("the engine's data was touched")
				}
				// The next boot finds a store in order.
				if ds, err := openWithin(t, dir); err != nil || len(ds.Recovered) != 0 {
					t.Fatalf("the next open: %+v %v", ds, err)
				}
			})
		}
	}
}

// What may hold the engine's images, containers and volumes is never
// moved: the error names it, says what it is and what to do.
func TestOpenDataStoreLeavesTheEngineDataAlone(t *testing.T) {
	for _, entry := range []string{"var/lib/docker", "var/lib/containerd", "var/lib/kubelet", "var/lib", "var"} {
		for name, bad := range notAFolder {
			t.Run(entry+" is "+name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, entry)
				os.MkdirAll(filepath.Dir(path), 0o755)
				bad.make(t, path)
				was, _ := os.Lstat(path)
				_, err := openWithin(t, dir)
				if err == nil {
					t.Fatal("the store opened")
				}
				msg := err.Error()
				for _, want := range []string{dir, entry + " is ", bad.says, "not a directory", "move it away", "start Docker Desktop again"} {
					if !strings.Contains(msg, want) {
						t.Fatalf("%q does not say %q", msg, want)
					}
				}
				if now, err := os.Lstat(path); err != nil || now.Mode().Type() != was.Mode().Type() {
					t.Fatalf("%s was touched: %v %v", entry, now, err)
				}
			})
		}
	}
}

// The store's root itself that is no folder says what it is.
func TestOpenDataStoreRootIsNoFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	notAFolder["a FIFO"].make(t, path)
	if _, err := openWithin(t, path); err == nil || !strings.Contains(err.Error(), "is a FIFO (named pipe), not a directory") {
		t.Fatalf("%v", err)
	}
}

package settings

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/regularfile"
	"golang.org/x/sys/unix"
)

// within runs f and fails the test when it waited on a file: when it has
// not returned after a minute (the bug it guards against is a boot that
// never ends), or took regularfile's DefaultTimeout or more (a file read
// is only given up on after that long, so a call that waited on one takes
// at least that; one that never waits takes milliseconds, however loaded
// the machine and its disk).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s has not returned after a minute", what)
	}
	if took := time.Since(start); took >= regularfile.DefaultTimeout {
		t.Fatalf("%s took %s: it waited on a file (a read is given up on after %s)", what, took, regularfile.DefaultTimeout)
	}
}

// MoveAside ends whatever the folder is: a parent that is a file, a
// symlink loop or read-only is an error naming the path, and a folder
// full of copies stops after a bounded number of names.
func TestMoveAsideAlwaysEnds(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for name, setup := range map[string]func(t *testing.T, dir string) string{
		"parent is a file": func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "ddinit"), "x")
			return filepath.Join(dir, "ddinit", "settings.json")
		},
		"parent is a symlink loop": func(t *testing.T, dir string) string {
			os.Symlink("ddinit", filepath.Join(dir, "ddinit"))
			return filepath.Join(dir, "ddinit", "settings.json")
		},
		"parent is a dangling symlink": func(t *testing.T, dir string) string {
			os.Symlink("gone", filepath.Join(dir, "ddinit"))
			return filepath.Join(dir, "ddinit", "settings.json")
		},
		// Root ignores permission bits: a read-only mount refuses it too.
		"parent is read-only": func(t *testing.T, dir string) string {
			ro := filepath.Join(dir, "ro")
			os.Mkdir(ro, 0o755)
			writeFile(t, filepath.Join(ro, "settings.json"), "{")
			if err := unix.Mount(ro, ro, "", unix.MS_BIND, ""); err != nil {
				t.Skipf("a read-only bind needs root and mount rights: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
			if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Skipf("remount read-only: %v", err)
			}
			return filepath.Join(ro, "settings.json")
		},
		"every name taken": func(t *testing.T, dir string) string {
			path := filepath.Join(dir, "settings.json")
			writeFile(t, path, "{")
			stamp := now.Format("20060102T150405Z")
			writeFile(t, path+".bad-"+stamp, "")
			for i := 2; i <= maxAsideNames; i++ {
				writeFile(t, path+".bad-"+stamp+"-"+strconv.Itoa(i), "")
			}
			return path
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := setup(t, t.TempDir())
			var kept string
			var err error
			within(t, "MoveAside", func() { kept, err = MoveAside(path, now) })
			if err == nil || kept != "" || !strings.Contains(err.Error(), path) {
				t.Fatalf("kept as %q, error %v: want an error naming %s", kept, err, path)
			}
		})
	}
}

// badFiles are the things a file the boot reads may be instead, each with
// what a recovery must say of it.
var badFiles = map[string]struct {
	make func(t *testing.T, path string)
	says string
}{
	"a FIFO": {func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}, "FIFO"},
	"a directory": {func(t *testing.T, path string) {
		os.Mkdir(path, 0o755)
		writeFile(t, filepath.Join(path, "inside"), "{}")
	}, "directory"},
	"a symlink loop": {func(t *testing.T, path string) {
		os.Symlink(filepath.Base(path), path)
	}, "symbolic links"},
	"a huge file": {func(t *testing.T, path string) {
		writeFile(t, path, "")
		os.Truncate(path, 64<<30) // sparse: 64 GB it would read whole
	}, "larger than"},
}

// kind is what is at path, for checking that the thing kept aside is the
// thing that was there.
func kind(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("nothing kept at %s: %v", path, err)
	}
	return st.Mode().Type()
}

// A settings document that is not a regular file of a sane size: Load
// returns at once, keeps it aside as it is, and the last good copy (or
// none) is in force.
func TestLoadRecoversADocumentThatIsNoFile(t *testing.T) {
	good := `{"generation": 2, "settings": {"daemonJSON": {"labels": ["b=1"]}}}`
	for name, bad := range badFiles {
		for _, withGood := range []bool{true, false} {
			t.Run(name+map[bool]string{true: "/last good", false: "/none"}[withGood], func(t *testing.T) {
				a, root := newApplier(t)
				doc := filepath.Join(root, DocumentFile)
				bad.make(t, doc)
				was, _ := os.Lstat(doc)
				if withGood {
					writeFile(t, doc+".last-good", good)
				}
				var err error
				within(t, "Load", func() { err = a.Load(nil) })
				if err != nil {
					t.Fatalf("the boot failed: %v", err)
				}
				v := a.View()
				if len(v.Recovered) != 1 || v.Recovered[0].File != doc || !strings.Contains(v.Recovered[0].Reason, bad.says) {
					t.Fatalf("recovered: %+v, want %s named and %q said", v.Recovered, doc, bad.says)
				}
				if k := kind(t, v.Recovered[0].KeptAs); k != was.Mode().Type() {
					t.Fatalf("kept aside as %s: a %v, was a %v", v.Recovered[0].KeptAs, k, was.Mode().Type())
				}
				daemon := readFile(t, filepath.Join(root, DaemonFile))
				if withGood != strings.Contains(daemon, `"b=1"`) || withGood != (v.Generation == 2) {
					t.Fatalf("in force: generation %d, daemon.json %s", v.Generation, daemon)
				}
			})
		}
	}
	// The last good copy itself no file: no document, and still no hang.
	for name, bad := range badFiles {
		t.Run("last good is "+name, func(t *testing.T) {
			a, root := newApplier(t)
			doc := filepath.Join(root, DocumentFile)
			writeFile(t, doc, "{")
			bad.make(t, doc+".last-good")
			within(t, "Load", func() { a.Load(nil) })
			if v := a.View(); v.Generation != 0 || len(v.Recovered) != 1 || !strings.Contains(v.Recovered[0].Using, "no settings document") {
				t.Fatalf("in force: %+v", v)
			}
		})
	}
}

// A daemon.json (no document) that is not a regular file of a sane size:
// kept aside as it is, and the engine's fallback written in its place —
// the last one dockerd accepted, or the pack's when that copy is no file
// either.
func TestLoadRecoversADaemonJSONThatIsNoFile(t *testing.T) {
	pack := []byte(`{"features": {"buildkit": false}}`)
	accepted := "{\n  \"labels\": [\"ok=1\"],\n  \"live-restore\": true\n}\n"
	for name, bad := range badFiles {
		for _, c := range []struct {
			name, want string
			accepted   func(t *testing.T, path string)
		}{
			{"accepted copy", `"ok=1"`, func(t *testing.T, path string) { writeFile(t, path, accepted) }},
			{"accepted copy is " + name, `"buildkit": false`, bad.make},
		} {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				a, root := newApplier(t)
				path := filepath.Join(root, DaemonFile)
				bad.make(t, path)
				was, _ := os.Lstat(path)
				c.accepted(t, filepath.Join(root, AcceptedDaemonFile))
				var err error
				within(t, "Load", func() { err = a.Load(pack) })
				if err != nil {
					t.Fatalf("the boot failed: %v", err)
				}
				v := a.View()
				if len(v.Recovered) != 1 || v.Recovered[0].File != path || !strings.Contains(v.Recovered[0].Reason, bad.says) {
					t.Fatalf("recovered: %+v, want %s named and %q said", v.Recovered, path, bad.says)
				}
				if k := kind(t, v.Recovered[0].KeptAs); k != was.Mode().Type() {
					t.Fatalf("kept aside as %s: a %v, was a %v", v.Recovered[0].KeptAs, k, was.Mode().Type())
				}
				if got := readFile(t, path); !strings.Contains(got, c.want) || !strings.Contains(got, `"live-restore": true`) {
					t.Fatalf("daemon.json now: %s", got)
				}
			})
		}
	}
}

// Past the boot: an accepted copy of daemon.json or a journal that is no
// file never hangs what reads it, and a change still applies.
func TestApplierNeverWaitsOnAFile(t *testing.T) {
	for name, bad := range badFiles {
		t.Run(name, func(t *testing.T) {
			a, root := newApplier(t)
			booted(t, a, root)
			accepted := filepath.Join(root, AcceptedDaemonFile)
			os.Remove(accepted)
			bad.make(t, accepted)
			var err error
			within(t, "a change", func() {
				_, err = a.Put([]byte(`{"generation": 0, "daemonJSON": {"labels": ["c=1"]}}`))
			})
			if daemon := readFile(t, filepath.Join(root, DaemonFile)); err != nil || !strings.Contains(daemon, `"c=1"`) {
				t.Fatalf("the change: %v, daemon.json %s", err, daemon)
			}
			within(t, "RefusedAtBoot", func() { a.RefusedAtBoot("exit code 1") })

			b, root := newApplier(t)
			bad.make(t, filepath.Join(root, PendingFile))
			writeFile(t, filepath.Join(root, DaemonFile), `{"labels": ["kept=1"]}`)
			within(t, "Load", func() { err = b.Load(nil) })
			if daemon := readFile(t, filepath.Join(root, DaemonFile)); err != nil || !strings.Contains(daemon, `"kept=1"`) {
				t.Fatalf("the boot beside a journal that is %s: %v, daemon.json %s", name, err, daemon)
			}
		})
	}
}

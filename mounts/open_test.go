package mounts

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Open reads the folder the Dir holds, even once its path names a
// symlink to somewhere else.
func TestOpenReadsTheFolderHeld(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "held", "a"), 0o755)
	os.WriteFile(filepath.Join(root, "held", "b"), nil, 0o644)
	os.MkdirAll(filepath.Join(root, "elsewhere", "secret"), 0o755)
	parent, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	d, err := parent.Sub("held")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	list := func() []string {
		t.Helper()
		f, err := d.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	if got := list(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("entries: %q", got)
	}
	os.Rename(filepath.Join(root, "held"), filepath.Join(root, "moved"))
	if err := os.Symlink(filepath.Join(root, "elsewhere"), filepath.Join(root, "held")); err != nil {
		t.Fatal(err)
	}
	if got := list(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("entries once the path is a symlink: %q", got)
	}
}

// ReadPath reads a file some folders down, and refuses a symlink at any
// of its components (another distro's root planted it); a missing file
// is fs.ErrNotExist.
func TestReadPathRefusesSymlinksOnTheWay(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a/b"), 0o755)
	os.WriteFile(filepath.Join(root, "a/b/f"), []byte("offered"), 0o644)
	secret := filepath.Join(t.TempDir(), "secret")
	os.MkdirAll(secret, 0o755)
	os.WriteFile(filepath.Join(secret, "f"), []byte("private"), 0o600)
	d, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if b, err := d.ReadPath("a/b/f", 100); err != nil || string(b) != "offered" {
		t.Fatalf("read: %q %v", b, err)
	}
	if _, err := d.ReadPath("a/b/missing", 100); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file: %v", err)
	}
	os.Symlink(secret, filepath.Join(root, "a/link"))
	os.Symlink(filepath.Join(secret, "f"), filepath.Join(root, "a/b/g"))
	for _, rel := range []string{"a/link/f", "a/b/g", "../" + filepath.Base(root) + "/a/b/f", "/etc/passwd"} {
		if b, err := d.ReadPath(rel, 100); err == nil {
			t.Errorf("%s read through: %q", rel, b)
		}
	}
	if _, err := d.ReadPath("a/b/f", 3); err == nil {
		t.Error("a file over the limit was read")
	}
}

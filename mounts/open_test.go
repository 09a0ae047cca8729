package mounts

import (
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

package mounts

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A file written owned has the mode and group asked for, whatever the
// umask; a symlink at its name is replaced, its target left alone; a
// symlink on the way to its folder is refused.
func TestWriteFileOwned(t *testing.T) {
	shared := t.TempDir()
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	d, err := OpenFolder(shared, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	gid := os.Getgid()
	if err := d.WriteFileOwned("f", []byte("one"), 0o640, gid); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(shared, "a/b/f")
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o640 || int(st.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Fatalf("written as %v, group %d; want -rw-r-----, group %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid, gid)
	}

	victim := filepath.Join(shared, "victim")
	os.WriteFile(victim, []byte("keep"), 0o600)
	os.Remove(path)
	os.Symlink(victim, path)
	if err := d.WriteFileOwned("f", []byte("two"), 0o640, gid); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if st, _ := os.Lstat(path); !st.Mode().IsRegular() {
		t.Errorf("the symlink was not replaced: %v", st.Mode())
	}
	names, _ := d.Names()
	if len(names) != 1 {
		t.Errorf("left in the folder: %q", names)
	}

	os.MkdirAll(filepath.Join(shared, "elsewhere"), 0o755)
	os.Symlink(filepath.Join(shared, "elsewhere"), filepath.Join(shared, "c"))
	if d, err := OpenFolder(shared, "c/b"); err == nil {
		d.Close()
		t.Fatal("a folder reached through a symlink was opened")
	}
	if _, err := os.Lstat(filepath.Join(shared, "elsewhere/b")); err == nil {
		t.Error("a folder was made through the symlink")
	}
}

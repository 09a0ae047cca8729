package regularfile

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadsRegularFilesOnly(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "resolv.conf")
	os.WriteFile(regular, []byte("nameserver 10.0.0.1\n"), 0o644)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	loop := filepath.Join(dir, "loop")
	os.Symlink(loop, loop)
	link := filepath.Join(dir, "link")
	os.Symlink(regular, link)

	for _, ok := range []string{regular, link} {
		b, err := Read(ok, 64)
		if err != nil || string(b) != "nameserver 10.0.0.1\n" {
			t.Errorf("%s: %q %v", ok, b, err)
		}
	}
	for path, want := range map[string]string{
		fifo:        "a FIFO",
		sock:        "",
		dir:         "a directory",
		"/dev/null": "a character device",
	} {
		start := time.Now()
		_, err := Read(path, 64)
		if !errors.Is(err, ErrNotRegular) && !errors.Is(err, syscall.ENXIO) {
			t.Errorf("%s: %v", path, err)
		}
		if want != "" && !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v does not say %q", path, err, want)
		}
		if time.Since(start) > time.Second {
			t.Errorf("%s took %s", path, time.Since(start))
		}
	}
	if _, err := Read(loop, 64); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("a symlink loop: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "none"), 64); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
	if _, err := Read(regular, 5); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a file over the limit: %v", err)
	}
	if b, err := Read(regular, 20); err != nil || len(b) != 20 {
		t.Errorf("a file of exactly the limit: %q %v", b, err)
	}
}

// A file system that does not answer costs the caller its bound, not its
// life.
func TestHungOpenIsBounded(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hung := func(string) (*os.File, error) { <-release; return nil, errors.New("never") }
	old := openFile
	openFile = hung
	defer func() { openFile = old }()
	start := time.Now()
	_, err := OpenWithin("/mnt/host/c/hung", 50*time.Millisecond)
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("%v after %s", err, time.Since(start))
	}
}

// The buffer is sized by what the file says it holds; what it really
// holds is what is read: a file of every size around the buffer's steps,
// a file that says it is empty (/proc's), one at and over the limit.
func TestReadsWhatTheFileHolds(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 200 << 10, 1 << 20} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte('a' + i%26)
		}
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := Read(path, int64(n)); err != nil || string(b) != string(want) {
			t.Errorf("%d bytes at a limit of %d: %d bytes read, %v", n, n, len(b), err)
		}
		if b, err := Read(path, 4<<20); err != nil || string(b) != string(want) {
			t.Errorf("%d bytes: %d bytes read, %v", n, len(b), err)
		}
		if n > 0 {
			if _, err := Read(path, int64(n-1)); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%d bytes at a limit of %d: %v", n, n-1, err)
			}
		}
	}
	// A limit below nothing refuses, never sizes a buffer by it.
	if _, err := Read(filepath.Join(dir, "f"), -1000); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a negative limit: %v", err)
	}
	// /proc's files say they hold nothing and hold lines.
	b, err := Read("/proc/self/status", 1<<20)
	if err != nil || !strings.Contains(string(b), "\nPid:") {
		t.Errorf("/proc/self/status: %d bytes, %v", len(b), err)
	}
}

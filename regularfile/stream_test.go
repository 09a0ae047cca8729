package regularfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A stream whose file system stops answering midway fails after its
// bound, and stays failed; what came before it was read whole.
func TestReaderWithinBoundsEachRead(t *testing.T) {
	r, w, err := os.Pipe() // a writer that stops writing plays the hung file system
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	defer r.Close()
	w.Write([]byte("first"))
	rd := ReaderWithin(r, 100*time.Millisecond)
	p := make([]byte, 64)
	if n, err := rd.Read(p); err != nil || string(p[:n]) != "first" {
		t.Fatalf("the data there: %q %v", p[:n], err)
	}
	start := time.Now()
	if _, err := rd.Read(p); !errors.Is(err, ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Fatalf("a read that gets nothing: %v after %s", err, time.Since(start))
	}
	clear(p)
	w.Write([]byte("late"))
	if _, err := rd.Read(p); !errors.Is(err, ErrTimeout) {
		t.Fatalf("the read after a timeout: %v", err)
	}
	if string(p[:4]) == "late" {
		t.Fatal("the read left behind wrote into the caller's buffer")
	}
}

// A regular file streams whole, as io.Copy would read it.
func TestReaderWithinReadsWholeFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "image.iso")
	want := make([]byte, 3<<20+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	os.WriteFile(path, want, 0o644)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(ReaderWithin(f, time.Second))
	if err != nil || string(got) != string(want) {
		t.Fatalf("%d bytes of %d, %v", len(got), len(want), err)
	}
}

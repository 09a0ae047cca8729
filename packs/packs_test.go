package packs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOlder(t *testing.T) {
	for _, c := range []struct {
		a, b  string
		older bool
	}{
		{"20.10.24+dfsg1-1+deb12u1+b6", "20.10.25", true},
		{"20.10.25", "20.10.24+dfsg1", false},
		{"20.10.24", "20.10.24+dfsg1", false},
		{"20.10", "20.10.1", true},
		{"24.0.5", "20.10.24", false},
		{"1:20.10.24", "20.10.25", true},
		{"unknown", "20.10.24", false},
		{"", "20.10.24", false},
	} {
		if got := Older(c.a, c.b); got != c.older {
			t.Errorf("Older(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

func TestChoiceAndRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "choice.json")
	if c, err := LoadChoice(p); err != nil || c.Current != nil {
		t.Fatalf("no file: %+v %v", c, err)
	}
	c := Choice{Current: &Ref{Path: "/p/2.iso", Digest: "sha256:aa", Engine: "20.10.24"}, Previous: &Ref{Path: "/p/1.iso", Digest: "sha256:bb"}, Trial: true}
	if err := c.Save(p); err != nil {
		t.Fatal(err)
	}
	got, err := LoadChoice(p)
	if err != nil || got.Current.Digest != "sha256:aa" || got.Previous.Path != "/p/1.iso" || !got.Trial {
		t.Fatalf("read back: %+v %v", got, err)
	}
	r := filepath.Join(dir, "engine.json")
	if err := (Record{Digest: "sha256:aa", Engine: "20.10.24"}).Save(r); err != nil {
		t.Fatal(err)
	}
	if rec := LoadRecord(r); rec.Engine != "20.10.24" {
		t.Fatalf("record: %+v", rec)
	}
}

// The choice or the record that is no file (a FIFO, a folder, a file far
// too large) never hangs the boot: the choice is an error naming it (the
// config's pack boots), the record is none.
func TestChoiceAndRecordThatAreNoFiles(t *testing.T) {
	for name, makeBad := range map[string]func(path string) error{
		"a FIFO":      func(path string) error { return syscall.Mkfifo(path, 0o644) },
		"a directory": func(path string) error { return os.Mkdir(path, 0o755) },
		"huge": func(path string) error {
			os.WriteFile(path, nil, 0o644)
			return os.Truncate(path, 1<<40)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			choice, record := filepath.Join(dir, "version-pack.json"), filepath.Join(dir, "engine.json")
			for _, p := range []string{choice, record} {
				if err := makeBad(p); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan struct{})
			var err error
			var rec Record
			go func() {
				defer close(done)
				_, err = LoadChoice(choice)
				rec = LoadRecord(record)
			}()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("reading the choice and the record has not returned after 1s")
			}
			if err == nil || !strings.Contains(err.Error(), choice) {
				t.Fatalf("the choice: %v, want an error naming %s", err, choice)
			}
			if rec != (Record{}) {
				t.Fatalf("the record: %+v, want none", rec)
			}
		})
	}
}

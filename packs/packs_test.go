package packs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
	if rec, err := LoadRecord(r); err != nil || rec.Engine != "20.10.24" || !rec.Ran() {
		t.Fatalf("record: %+v %v", rec, err)
	}
	if rec, err := LoadRecord(filepath.Join(dir, "none.json")); err != nil || rec.Ran() {
		t.Fatalf("no record: %+v %v", rec, err)
	}
	// A record that does not parse is not "none ran": it is an error.
	os.WriteFile(r, []byte(`{"digest": "sha256:aa", "engi`), 0o644)
	if _, err := LoadRecord(r); err == nil || !strings.Contains(err.Error(), r) {
		t.Fatalf("a torn record: %v", err)
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
			var err, recErr error
			var rec Record
			go func() {
				defer close(done)
				_, err = LoadChoice(choice)
				rec, recErr = LoadRecord(record)
			}()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("reading the choice and the record has not returned after 1s")
			}
			if err == nil || !strings.Contains(err.Error(), choice) {
				t.Fatalf("the choice: %v, want an error naming %s", err, choice)
			}
			// A record that cannot be read is not "none ran": an error
			// naming it (the version checks then fail closed).
			if recErr == nil || !strings.Contains(recErr.Error(), record) || rec.Ran() {
				t.Fatalf("the record: %+v %v, want an error naming %s", rec, recErr, record)
			}
		})
	}
}

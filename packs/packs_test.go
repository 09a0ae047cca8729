package packs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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

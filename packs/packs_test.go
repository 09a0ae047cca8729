package packs

import (
	"path/filepath"
	"testing"
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

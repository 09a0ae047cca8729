package settings

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

var owned = map[string]string{"hosts": "ddinit gives dockerd --host", "data-root": "ddinit gives dockerd --data-root"}

func TestParseRefusesWhatItCannotApply(t *testing.T) {
	for body, field := range map[string]string{
		`{"daemonJSON": {`:                       "(document)",
		`{"generation": 0, "colour": "blue"}`:    "colour",
		`{"daemonJSON": {"hosts": ["tcp://x"]}}`: "daemonJSON.hosts",
		`{"daemonJSON": {"data-root": "/x"}}`:    "daemonJSON.data-root",
		`{"kubernetes": "yes"}`:                  "kubernetes",
		`{"daemonJSON": []}`:                     "daemonJSON",
		`{"generation": 1} {"generation": 2}`:    "(document)",
		`null`:                                   "(document)",
		`[]`:                                     "(document)",
		``:                                       "(document)",
		`{"generation": "1"}`:                    "generation",
		`{"b": 1, "a": 2}`:                       "a",
	} {
		_, err := Parse([]byte(body), owned)
		var inv *Invalid
		if !errors.As(err, &inv) || inv.Field != field || !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want the field %s named", body, err, field)
		}
	}
	p, err := Parse([]byte(`{"generation": 3, "daemonJSON": {"log-driver": "local", "labels": ["a=1"]}, "kubernetes": true}`), owned)
	if err != nil || p.Generation != 3 || string(p.DaemonJSON["log-driver"]) != `"local"` || !*p.Kubernetes {
		t.Fatalf("a valid document: %+v %v", p, err)
	}
}

func TestGenerationsAndStore(t *testing.T) {
	s := Store{Path: filepath.Join(t.TempDir(), "settings.json")}
	cur, rec := s.Load(time.Now())
	if rec != nil || cur.Generation != 0 {
		t.Fatalf("nothing stored: %+v %v", cur, rec)
	}
	yes := true
	next, err := Next(cur, Put{Generation: 0, Document: Document{Kubernetes: &yes}})
	if err != nil || next.Generation != 1 {
		t.Fatalf("first write: %+v %v", next, err)
	}
	if err := s.Save(next); err != nil {
		t.Fatal(err)
	}
	if _, err := Next(next, Put{Generation: 0}); !errors.Is(err, ErrStale) || !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "current one is 1") {
		t.Fatalf("a stale writer: %v", err)
	}
	back, rec := s.Load(time.Now())
	if rec != nil || back.Generation != 1 || !*back.Settings.Kubernetes {
		t.Fatalf("stored: %+v %v", back, rec)
	}
	entries, _ := os.ReadDir(filepath.Dir(s.Path))
	if len(entries) != 2 { // the document and its last good copy
		t.Fatalf("temporary files left: %v", entries)
	}
}

package settings

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// Any PUT body: an answer, never a panic; a refusal is always an invalid
// argument naming a field; what is accepted survives a round trip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"generation": 1, "daemonJSON": {"labels": ["a"]}, "kubernetes": true}`, `{"daemonJSON": {`, `null`, `[]`, `{"generation": 1e400}`, `{"daemonJSON": {"hosts": []}}`} {
		f.Add([]byte(s))
	}
	owned := map[string]string{"hosts": "ddinit sets it"}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := Parse(body, owned)
		if err != nil {
			var inv *Invalid
			if !errors.As(err, &inv) || inv.Field == "" || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%q: %v is not an invalid argument naming a field", body, err)
			}
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b, owned); err != nil {
			t.Fatalf("%q parsed, its re-encoding %s did not: %v", body, b, err)
		}
	})
}

// Any stored document: the boot goes on, with a usable document.
func FuzzLoadStored(f *testing.F) {
	f.Add([]byte(`{"generation": 2, "settings": {"daemonJSON": {"labels": ["b=1"]}}}`))
	f.Add([]byte(`{"generation": 2, "settin`))
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		s := Store{Path: filepath.Join(dir, "settings.json")}
		if err := os.WriteFile(s.Path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		st, rec := s.Load(time.Now())
		if rec == nil {
			if st.Generation < 0 {
				t.Fatalf("loaded a negative generation from %q", content)
			}
			return
		}
		if b, err := os.ReadFile(rec.KeptAs); err != nil || string(b) != string(content) {
			t.Fatalf("%q: kept as %s: %q %v", content, rec.KeptAs, b, err)
		}
	})
}

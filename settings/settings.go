package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Document is the settings the frontend owns. Fields that are not set
// leave ddinit's own (the config's, the version pack's) in force.
type Document struct {
	// DaemonJSON is the user's daemon.json, as an object.
	DaemonJSON map[string]json.RawMessage `json:"daemonJSON,omitempty"`
	// Kubernetes switches the services whose setting is "kubernetes".
	Kubernetes *bool `json:"kubernetes,omitempty"`
}

// Stored is a document with the generation it was written as.
type Stored struct {
	Generation int64    `json:"generation"`
	Settings   Document `json:"settings"`
}

// Put is what PUT /settings carries: a whole document and the generation
// it replaces.
type Put struct {
	Generation int64 `json:"generation"`
	Document
}

// Invalid is a document refused before anything changed: the field and
// why.
type Invalid struct {
	Field, Reason string
}

func (e *Invalid) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// ErrStale is a write that replaces a generation that is not the current.
var ErrStale = errors.New("the settings changed since they were read")

// Parse reads a PUT body: JSON, only known keys, and no daemon.json key
// that ddinit owns (owned maps each such key to why).
func Parse(body []byte, owned map[string]string) (Put, error) {
	var p Put
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return p, &Invalid{Field: "(document)", Reason: fmt.Sprintf("not valid JSON at byte %d: %v", se.Offset, err)}
		case errors.As(err, &te):
			field := strings.TrimPrefix(te.Field, "Document.")
			want := map[string]string{"kubernetes": "true or false", "daemonJSON": "an object (daemon.json)", "generation": "a number"}[field]
			if want == "" {
				want = te.Type.String()
			}
			return p, &Invalid{Field: field, Reason: fmt.Sprintf("want %s, not %s", want, te.Value)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return p, &Invalid{Field: strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), Reason: "not a setting (known: generation, daemonJSON, kubernetes)"}
		}
		return p, &Invalid{Field: "(document)", Reason: err.Error()}
	}
	if dec.More() {
		return p, &Invalid{Field: "(document)", Reason: "more than one JSON value"}
	}
	keys := make([]string, 0, len(p.DaemonJSON))
	for k := range p.DaemonJSON {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if why, ok := owned[k]; ok {
			return p, &Invalid{Field: "daemonJSON." + k, Reason: "ddinit sets it: " + why}
		}
	}
	return p, nil
}

// Store keeps the document in the data store.
type Store struct {
	Path string // <data-dir>/settings.json
}

// Load reads the stored document; none stored yet is generation 0.
func (s Store) Load() (Stored, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return Stored{}, nil
	}
	if err != nil {
		return Stored{}, fmt.Errorf("settings %s: %w", s.Path, err)
	}
	var st Stored
	if err := json.Unmarshal(b, &st); err != nil {
		return Stored{}, fmt.Errorf("settings %s: %w", s.Path, err)
	}
	return st, nil
}

// Save writes st atomically: a temporary file, synced, renamed over the
// old one, the folder synced.
func (s Store) Save(st Stored) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return WriteAtomic(s.Path, append(b, '\n'), 0o644)
}

// WriteAtomic replaces path with b: a crash leaves the old content or the
// new, never a mix.
func WriteAtomic(path string, b []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if _, err := tmp.Write(b); err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename is durable with it; without, still atomic
		d.Close()
	}
	return nil
}

// Next checks p against the stored generation and returns what to store.
func Next(cur Stored, p Put) (Stored, error) {
	if p.Generation != cur.Generation {
		return cur, fmt.Errorf("%w: this document replaces generation %d, the current one is %d (read it again)", ErrStale, p.Generation, cur.Generation)
	}
	return Stored{Generation: cur.Generation + 1, Settings: p.Document}, nil
}

// DaemonJSON is the daemon.json dockerd gets: the user's object with the
// keys ddinit sets added (forced wins over the user's).
func DaemonJSON(user map[string]json.RawMessage, forced map[string]json.RawMessage) ([]byte, error) {
	out := map[string]json.RawMessage{}
	for k, v := range user {
		out[k] = v
	}
	for k, v := range forced {
		out[k] = v
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("daemon.json: %w", err)
	}
	return append(b, '\n'), nil
}

// Equal reports whether two daemon.json objects say the same.
func Equal(a, b map[string]json.RawMessage) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

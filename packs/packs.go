package packs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/iso9660"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/regularfile"
)

// Files of the data store, relative to its root.
const (
	ChoiceFile = "etc/ddinit/version-pack.json"
	RecordFile = "etc/ddinit/engine.json"
)

// maxRecordBytes bounds what is read of the choice and the record: a few
// paths, digests and a failure's words take a few KB.
const maxRecordBytes = 1 << 20

// Ref names a pack: where it is, its digest, and what it says of itself.
type Ref struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
	// Engine is dockerd's version, from the pack's manifest.
	Engine string `json:"engine,omitempty"`
}

// Choice is the pack the next boot uses (Current, over the config's) and
// the one before it.
type Choice struct {
	Current  *Ref `json:"current,omitempty"`
	Previous *Ref `json:"previous,omitempty"`
	// Trial: Current has not yet booted to a ready engine; a boot on it
	// that does not get there rolls back to Previous.
	Trial bool `json:"trial,omitempty"`
	// LastFailure is why the last pack on trial was rolled back.
	LastFailure string    `json:"lastFailure,omitempty"`
	FailedAt    time.Time `json:"failedAt,omitzero"`
}

// LoadChoice reads the choice; none is an empty Choice. An unreadable file
// is an error naming it (the boot then uses the config's pack).
func LoadChoice(path string) (Choice, error) {
	var c Choice
	b, err := regularfile.Read(path, maxRecordBytes)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return Choice{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Save writes the choice atomically.
func (c Choice) Save(path string) error {
	b, _ := json.MarshalIndent(c, "", "  ") // plain fields always encode
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// Record is which pack and engine version last ran on the data store.
type Record struct {
	Digest string    `json:"digest"`
	Engine string    `json:"engine"`
	At     time.Time `json:"at"`
}

// Ran reports whether the record names an engine that ran.
func (r Record) Ran() bool { return r.Digest != "" || r.Engine != "" }

// LoadRecord reads the record; none is the zero Record. A file that cannot
// be read or does not parse is an error naming it: which engine ran is
// then not known, which is not the same as none.
func LoadRecord(path string) (Record, error) {
	var r Record
	b, err := regularfile.Read(path, maxRecordBytes)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Save writes the record atomically, unless it says that already.
func (r Record) Save(path string) error {
	if cur, err := LoadRecord(path); err == nil && cur.Digest == r.Digest && cur.Engine == r.Engine {
		return nil
	}
	b, _ := json.MarshalIndent(r, "", "  ") // plain fields always encode
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// Manifest is what a pack says of itself (version-pack.json).
type Manifest struct {
	Components []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"components"`
}

// Engine is dockerd's version in the manifest ("" when it names none).
func (m Manifest) Engine() string {
	for _, c := range m.Components {
		if c.Name == "dockerd" {
			return c.Version
		}
	}
	return ""
}

// dockerdDefinition is where a pack defines the dockerd service.
const dockerdDefinition = "containers/services/dockerd/config.json"

// Inspect reads a pack image (already verified): it must define the
// dockerd service; its manifest gives the engine version.
func Inspect(image string) (Manifest, error) {
	var m Manifest
	img, err := iso9660.OpenFile(image)
	if err != nil {
		return m, err
	}
	defer img.Close()
	tree, err := img.Walk()
	if err != nil {
		return m, err
	}
	var haveDockerd bool
	for _, e := range tree.Entries {
		switch e.Path {
		case dockerdDefinition:
			haveDockerd = e.Type == iso9660.TypeRegular
		case "version-pack.json":
			b, err := img.ReadEntry(e, 1<<20)
			if err != nil {
				return m, err
			}
			if err := json.Unmarshal(b, &m); err != nil {
				return m, fmt.Errorf("version-pack.json: %w", err)
			}
		}
	}
	if !haveDockerd {
		return m, fmt.Errorf("the pack has no dockerd service definition (/%s)", dockerdDefinition)
	}
	return m, nil
}

// State is the choice as the control API shows it, with the pack running
// now.
func (c Choice) State(running *control.PackRef) control.PackState {
	st := control.PackState{Running: running, Trial: c.Trial, LastFailure: c.LastFailure}
	ref := func(r *Ref) *control.PackRef {
		if r == nil {
			return nil
		}
		return &control.PackRef{Path: r.Path, Digest: r.Digest, Engine: r.Engine}
	}
	st.Next, st.Previous = ref(c.Current), ref(c.Previous)
	return st
}

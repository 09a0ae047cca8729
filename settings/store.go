package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/atomicfile"
	"os"
	"time"
)

// Store keeps the document in the data store, with a copy of the last
// one that was applied: a document cut short (a crash of the disk under
// it, a full disk, a hand edit) never keeps the engine down.
type Store struct {
	Path string // <data-dir>/etc/ddinit/settings.json
}

// LastGood is where the copy of the last applied document is kept.
func (s Store) LastGood() string { return s.Path + ".last-good" }

// Recovery says that a file could not be used at boot and what was done
// instead.
type Recovery struct {
	File   string `json:"file"`             // the file that could not be used
	Reason string `json:"reason"`           // why
	KeptAs string `json:"keptAs,omitempty"` // where it was moved, for the person
	Using  string `json:"using"`            // what is in force instead
}

func (r Recovery) String() string {
	s := fmt.Sprintf("%s could not be used (%s)", r.File, r.Reason)
	if r.KeptAs != "" {
		s += "; kept aside as " + r.KeptAs
	}
	return s + "; in force: " + r.Using
}

// Load reads the stored document; none stored yet is generation 0. A
// document that cannot be read or parsed is moved aside and the last good
// copy is used (or none); the Recovery says so. Load never fails: at boot
// a bad document must not keep the engine down.
func (s Store) Load(now time.Time) (Stored, *Recovery) {
	st, err := readStored(s.Path)
	if err == nil || errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	rec := &Recovery{File: s.Path, Reason: err.Error()}
	if kept, merr := MoveAside(s.Path, now); merr == nil {
		rec.KeptAs = kept
	} else {
		rec.Reason += "; it could not be moved aside: " + merr.Error()
	}
	good, gerr := readStored(s.LastGood())
	if gerr != nil {
		rec.Using = "no settings document (ddinit's and the version pack's defaults)"
		return Stored{}, rec
	}
	rec.Using = fmt.Sprintf("the last good settings (generation %d)", good.Generation)
	if err := s.Save(good); err != nil {
		rec.Using += ", not written back: " + err.Error()
	}
	return good, rec
}

func readStored(path string) (Stored, error) {
	var st Stored
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return Stored{}, fmt.Errorf("not a settings document: %w", err)
	}
	if st.Generation < 0 {
		return Stored{}, fmt.Errorf("not a settings document: generation %d", st.Generation)
	}
	return st, nil
}

// Save writes st atomically, then its copy as the last good one. Only the
// document itself decides: a copy that could not be written leaves the
// previous copy, which is still good.
func (s Store) Save(st Stored) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := atomicfile.Write(s.Path, b, 0o644); err != nil {
		return err
	}
	_ = atomicfile.Write(s.LastGood(), b, 0o644) // a backup; the document is written
	return nil
}

// MoveAside renames a file that cannot be used to <path>.bad-<time>, kept
// for the person who wants to know what was in it, and returns the new
// name.
func MoveAside(path string, now time.Time) (string, error) {
	stamp := now.UTC().Format("20060102T150405Z")
	aside := path + ".bad-" + stamp
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.bad-%s-%d", path, stamp, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("keep %s aside: %w", path, err)
	}
	return aside, nil
}

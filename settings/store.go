package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/regularfile"
)

// MaxDocumentBytes bounds what ddinit reads of the settings document, its
// last good copy, daemon.json and its accepted copy. A PUT body is at most
// 1 MB; stored indented (each key and array element on a line of its own)
// it grows, so the files get four times that. A file over it is unusable
// like one that does not parse: kept aside, never read whole.
const MaxDocumentBytes = 4 << 20

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
	b, err := regularfile.Read(path, MaxDocumentBytes)
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

// maxAsideNames bounds the names MoveAside tries: the stamp changes every
// second, so more than a few taken in one second is a folder gone wrong,
// not a busy one.
const maxAsideNames = 100

// MoveAside renames a file that cannot be used to <path>.bad-<time>, kept
// for the person who wants to know what was in it, and returns the new
// name. Only a name already taken makes it try the next one, a bounded
// number of times; anything else (the folder is not one, is a symlink
// loop, cannot be read) is an error naming the path.
func MoveAside(path string, now time.Time) (string, error) {
	stamp := now.UTC().Format("20060102T150405Z")
	aside := path + ".bad-" + stamp
	for i := 2; ; i++ {
		_, err := os.Lstat(aside)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("keep %s aside: %w", path, err)
		}
		if i > maxAsideNames {
			return "", fmt.Errorf("keep %s aside: %s.bad-%s and %d more names are taken: remove the old copies", path, path, stamp, maxAsideNames-1)
		}
		aside = fmt.Sprintf("%s.bad-%s-%d", path, stamp, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("keep %s aside: %w", path, err)
	}
	return aside, nil
}

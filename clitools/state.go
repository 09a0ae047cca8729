package clitools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ddinit/ddinit/mounts"
)

// maxStateBytes bounds a distro's state file as it is read back: every
// distro can write the folder, so what is there may be anything.
const maxStateBytes = 64 << 10

const stateSuffix = ".json"

func (k *Linker) stateName() string { return k.Distro + stateSuffix }

func (k *Linker) writeState(st State) error {
	d, err := mounts.OpenFolder(k.Shared, k.States)
	if err != nil {
		return fmt.Errorf("the distro's state: %w", err)
	}
	defer d.Close()
	b, _ := json.MarshalIndent(st, "", "  ")
	return d.WriteFile(k.stateName(), append(b, '\n'))
}

func (k *Linker) removeState() error {
	d, err := mounts.OpenFolder(k.Shared, k.States)
	if err != nil {
		return fmt.Errorf("the distro's state: %w", err)
	}
	defer d.Close()
	return d.Remove(k.stateName())
}

// readState reads the state file name in d: beneath it, never through a
// symlink another distro planted, bounded.
func readState(d *mounts.Dir, name string) (State, error) {
	var st State
	b, err := d.ReadFile(name, maxStateBytes)
	if err != nil {
		return st, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return st, fmt.Errorf("%s: %w", name, err)
	}
	return st, nil
}

// DistroState is one distro's state as `ddinit status` reads it back, or
// why it could not be read.
type DistroState struct {
	State
	File string `json:"file"`
	Err  string `json:"error,omitempty"`
}

// ReadStates reads every distro's state file below shared at folder, by
// distro name. A file that is not one (too large, not JSON, a FIFO) is
// listed with its error; the distro a file names must be its own.
func ReadStates(shared, folder string) ([]DistroState, error) {
	dir := filepath.Join(shared, folder)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no distro has said anything yet
	}
	d, err := mounts.OpenFolder(shared, folder)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Names()
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []DistroState
	for _, n := range names {
		distro, ok := strings.CutSuffix(n, stateSuffix)
		if !ok || strings.HasPrefix(n, ".") {
			continue
		}
		path := filepath.Join(dir, n)
		st, err := readState(d, n)
		ds := DistroState{State: st, File: path}
		switch {
		case err != nil:
			ds.State = State{Distro: distro}
			ds.Err = err.Error()
		case st.Distro != distro:
			ds.State = State{Distro: distro}
			ds.Err = fmt.Sprintf("%s names distro %q", path, st.Distro)
		}
		out = append(out, ds)
	}
	return out, nil
}

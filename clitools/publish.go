package clitools

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/regularfile"
)

// The tools tree, as the image lays it out and the links point into it.
const (
	ManifestFile = "cli-tools.json"
	dockerBinary = "bin/docker"
	// kubectlBinary is in images from the one that first carried it on.
	kubectlBinary = "bin/kubectl"
	pluginsDir    = "cli-plugins"
	// Current is the link in the shared folder naming the version offered.
	Current = "current"
)

// plugins are the CLI plugins the tools carry, by file name.
var plugins = []string{"docker-compose", "docker-buildx"}

// maxManifestBytes bounds the manifest read from an image (a few lines).
const maxManifestBytes = 64 << 10

// Component is one tool of the image: its name, version and source.
type Component struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Source  string `json:"source,omitempty"`
}

// Manifest is the image's cli-tools.json.
type Manifest struct {
	Name       string      `json:"name,omitempty"`
	Components []Component `json:"components"`
}

// Summary names each tool with its version: "docker 29.10.0, …".
func (m Manifest) Summary() string {
	var parts []string
	for _, c := range m.Components {
		parts = append(parts, c.Name+" "+c.Version)
	}
	return strings.Join(parts, ", ")
}

// ReadManifest reads the manifest of the tools tree at dir.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := regularfile.Read(filepath.Join(dir, ManifestFile), maxManifestBytes)
	if err != nil {
		return m, fmt.Errorf("CLI tools manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("CLI tools manifest %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if len(m.Components) == 0 {
		return m, fmt.Errorf("CLI tools manifest %s names no tool", filepath.Join(dir, ManifestFile))
	}
	return m, nil
}

// Check is what a tools tree must hold before it is offered: its manifest,
// and docker and each plugin as executable regular files; kubectl, which
// older images lack, is checked as they are when it is there.
func Check(tree string) (Manifest, error) {
	m, err := ReadManifest(tree)
	if err != nil {
		return m, err
	}
	for _, rel := range append([]string{dockerBinary, kubectlBinary}, pluginPaths()...) {
		st, err := os.Lstat(filepath.Join(tree, rel))
		switch {
		case rel == kubectlBinary && errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return m, fmt.Errorf("CLI tools image: %s: %w", rel, err)
		case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
			return m, fmt.Errorf("CLI tools image: %s is not an executable file (%s)", rel, st.Mode())
		}
	}
	return m, nil
}

func pluginPaths() []string {
	var p []string
	for _, name := range plugins {
		p = append(p, pluginsDir+"/"+name)
	}
	return p
}

// isVersion reports a name Publish gives a version's folder: an image
// digest's first 12 hex digits.
func isVersion(name string) bool {
	if len(name) != 12 {
		return false
	}
	for _, c := range name {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// VersionOf is the name of the folder an image of this sha256 gets.
func VersionOf(digest string) string {
	if len(digest) < 12 {
		return digest
	}
	return digest[:12]
}

// Publish offers tree (an extracted tools image, Check'ed) to every
// distro, below shared at folder: bound read-only at folder/<version>,
// then folder/current switched to it in one rename. The version current
// named until then stays bound until the next Publish or Withdraw (a
// docker that read current just before the rename still finds its
// files); every older one's bind is taken down (lazily: a docker already
// running from it keeps running).
func Publish(shared, folder, tree, version string) error {
	if !isVersion(version) {
		return fmt.Errorf("CLI tools version %q: want 12 hex digits", version)
	}
	d, err := mounts.OpenFolder(shared, folder)
	if err != nil {
		return fmt.Errorf("CLI tools folder: %w", err)
	}
	defer d.Close()
	previous, _ := os.Readlink(filepath.Join(shared, folder, Current))
	bound := false
	if !d.MountedAt(version) {
		if err := d.BindReadOnly(tree, version); err != nil {
			return fmt.Errorf("offer the CLI tools: %w", err)
		}
		bound = true
	}
	if err := d.Link(version, Current); err != nil {
		if bound && previous != version {
			err = errors.Join(err, d.Unbind(version))
		}
		return fmt.Errorf("offer the CLI tools: %w", err)
	}
	return takeDown(d, version, previous)
}

// Withdraw takes the offer down: folder/current first (the distros' links
// then point at nothing rather than at a folder being unmounted), then
// every version's bind, whether current could be removed or not.
func Withdraw(shared, folder string) error {
	d, err := mounts.OpenFolder(shared, folder)
	if err != nil {
		return fmt.Errorf("CLI tools folder: %w", err)
	}
	defer d.Close()
	return errors.Join(d.Remove(Current), takeDown(d))
}

// takeDown unbinds every version's folder but those to keep, and removes
// what a crash left half made: only names Publish makes.
func takeDown(d *mounts.Dir, keep ...string) error {
	names, err := d.Names()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		switch {
		case slices.Contains(keep, n):
		case mounts.IsTemp(n):
			errs = append(errs, d.Remove(n))
		case isVersion(n):
			errs = append(errs, d.Unbind(n))
		}
	}
	return errors.Join(errs...)
}

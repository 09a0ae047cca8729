package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/packs"
	"github.com/ddinit/ddinit/wire"
)

// makeVersionPack writes a small pack image (a dockerd definition and a
// manifest naming dockerd's version) with its sidecar, and returns its
// path and digest.
func makeVersionPack(t *testing.T, engine string) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Fatal("xorriso is not installed (make deps installs it)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	def := filepath.Join(src, "containers", "services", "dockerd", "config.json")
	os.MkdirAll(filepath.Dir(def), 0o755)
	os.WriteFile(def, []byte(`{"ociVersion": "1.0.2"}`), 0o644)
	manifest, _ := json.Marshal(map[string]any{"components": []map[string]string{{"name": "dockerd", "version": engine}}})
	os.WriteFile(filepath.Join(src, "version-pack.json"), manifest, 0o644)
	img := filepath.Join(dir, "pack.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-o", img, src).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, b)
	}
	b, _ := os.ReadFile(img)
	sum := sha256.Sum256(b)
	digest := hex.EncodeToString(sum[:])
	os.WriteFile(img+".sha256", []byte(digest+"  pack.iso\n"), 0o644)
	return img, digest
}

// packAPI is the control API's PUT /version-pack as PID 1 serves it,
// answered by the launcher's check: a PID 1 on a pack with dockerd
// running (digest runningDigest; "" while none runs).
type packAPI struct {
	control.Backend // only UsePack is served
	l               *launcher
	running         string
	runningDigest   string
}

func (b packAPI) UsePack(req control.UsePack) (control.PackState, error) {
	r := b.l.usePack(wire.PackAsk{Use: req, Running: b.running, RunningDigest: b.runningDigest}, b.l.replacing.generation)
	return r.Packs, r.Err.Err()
}

// storeLauncher is a launcher on a fresh data store: the record of the
// dockerd that last ran on it (none when record is nil, torn when it is
// "torn"), and the choice.
func storeLauncher(t *testing.T, record *string, choice packs.Choice) *launcher {
	t.Helper()
	l := quietLauncher()
	dir := t.TempDir()
	l.ds = &mounts.DataStore{Dir: dir}
	l.cfg.VersionPack = filepath.Join(dir, "config-pack.iso") // not there: only its name counts
	os.MkdirAll(filepath.Join(dir, "etc", "ddinit"), 0o755)
	switch {
	case record != nil && *record == "torn":
		os.WriteFile(l.ds.Path(packs.RecordFile), []byte(`{"digest": "aa", "eng`), 0o644)
	case record != nil:
		if err := (packs.Record{Digest: "aa", Engine: *record}).Save(l.ds.Path(packs.RecordFile)); err != nil {
			t.Fatal(err)
		}
	}
	if err := choice.Save(l.ds.Path(packs.ChoiceFile)); err != nil {
		t.Fatal(err)
	}
	return l
}

// putPack sends PUT /version-pack and returns the status and message.
func putPack(t *testing.T, api packAPI, body string) (int, string) {
	t.Helper()
	srv := httptest.NewServer((&control.Server{Backend: api}).Handler())
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/version-pack", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// An error's message, or an answer's warning.
	var answer struct{ Message, Warning string }
	json.NewDecoder(resp.Body).Decode(&answer)
	answer.Message += answer.Warning
	return resp.StatusCode, answer.Message
}

func ptr(s string) *string { return &s }

// A pack is refused (409, naming both versions, nothing chosen) when its
// dockerd is older than one that wrote the data store, or when either
// version, or the store's record, cannot be read; with force it is
// chosen. Every spelling that does mean a version is compared.
func TestPackUseChecksTheStoresEngine(t *testing.T) {
	for _, c := range []struct {
		what                   string
		record                 *string
		running, runningDigest string
		pack                   string
		refused                bool
		names                  []string // in the refusal
	}{
		{what: "an older pack", record: ptr("24.0.5"), pack: "20.10.24", refused: true, names: []string{"20.10.24", "24.0.5", "older"}},
		{what: "older than the running engine", record: ptr("20.10.24"), running: "24.0.5", runningDigest: "bb", pack: "23.0.1", refused: true, names: []string{"23.0.1", "24.0.5"}},
		{what: "a pack naming no version", record: ptr("20.10.24+dfsg1-1"), pack: "", refused: true, names: []string{`""`, "20.10.24+dfsg1-1", "cannot be compared"}},
		{what: "a pack whose version does not read", record: ptr("20.10.24"), pack: "20.10.x", refused: true, names: []string{"20.10.x", "20.10.24", "cannot be compared"}},
		{what: "a store whose version does not read", record: ptr("dev"), pack: "24.0.5", refused: true, names: []string{"24.0.5", "dev", "cannot be compared"}},
		{what: "a store whose record names no version", record: ptr(""), pack: "24.0.5", refused: true, names: []string{"24.0.5", `""`}},
		{what: "a running engine whose version is not known", running: "", runningDigest: "bb", pack: "24.0.5", refused: true, names: []string{"24.0.5", `""`}},
		{what: "a torn record", record: ptr("torn"), pack: "24.0.5", refused: true, names: []string{"24.0.5", packs.RecordFile}},
		{what: "the same engine", record: ptr("20.10.24+dfsg1-1+deb12u1+b6"), running: "20.10.24+dfsg1-1+deb12u1+b6", runningDigest: "bb", pack: "20.10.24+dfsg1-1+deb12u1+b6"},
		{what: "a v", record: ptr("20.10.24+dfsg1-1+deb12u1+b6"), pack: "v20.10.24"},
		{what: "an RPM's .ce", record: ptr("20.10.24"), pack: "20.10.24.ce"},
		{what: "Docker's Debian package", record: ptr("20.10.24+dfsg1"), pack: "5:20.10.24~3-0~debian-bookworm"},
		{what: "a newer pack", record: ptr("20.10.24"), running: "20.10.24", runningDigest: "bb", pack: "99.0.0"},
		{what: "a store no engine ran on", pack: ""},
	} {
		t.Run(c.what, func(t *testing.T) {
			img, digest := makeVersionPack(t, c.pack)
			for _, force := range []bool{false, true} {
				l := storeLauncher(t, c.record, packs.Choice{})
				api := packAPI{l: l, running: c.running, runningDigest: c.runningDigest}
				code, msg := putPack(t, api, fmt.Sprintf(`{"path": %q, "force": %v}`, img, force))
				choice, _ := packs.LoadChoice(l.ds.Path(packs.ChoiceFile))
				if c.refused && !force {
					if code != http.StatusConflict || choice.Current != nil {
						t.Fatalf("answered %d %q, chose %+v; want 409, nothing chosen", code, msg, choice.Current)
					}
					for _, n := range append(c.names, "force") {
						if !strings.Contains(msg, n) {
							t.Errorf("the refusal %q does not say %q", msg, n)
						}
					}
					continue
				}
				if code != http.StatusOK || choice.Current == nil || choice.Current.Digest != digest || choice.Current.Engine != c.pack {
					t.Fatalf("force %v: answered %d %q, chose %+v; want 200 and the pack chosen", force, code, msg, choice.Current)
				}
				// Forced past a refusal, the answer says what may be lost.
				if warned := strings.Contains(msg, "may be unusable or lost"); warned != c.refused {
					t.Errorf("force %v, refused %v: the answer %q warns: %v", force, c.refused, msg, warned)
				}
			}
		})
	}
}

// A rollback asked for is checked as a switch is: to a pack whose dockerd
// is older than the store's, or cannot be read, it is a 409 naming both
// (nothing changes); forced, it is chosen. A previous pack whose version
// was not kept is read from the image cache (or its path).
func TestPackRollbackChecksTheStoresEngine(t *testing.T) {
	current := &packs.Ref{Path: "/packs/current.iso", Digest: strings.Repeat("c", 64), Engine: "99.0.0"}
	cached, cachedDigest := makeVersionPack(t, "24.0.5")
	for _, c := range []struct {
		what     string
		record   *string
		running  string
		previous *packs.Ref
		refused  bool
		names    []string
		engine   string // the previous pack's, as the choice then records it
	}{
		{what: "below the store's engine", record: ptr("99.0.0"), previous: &packs.Ref{Path: "/packs/old.iso", Digest: strings.Repeat("a", 64), Engine: "20.10.24"}, refused: true, names: []string{"/packs/old.iso", "20.10.24", "99.0.0", "older"}, engine: "20.10.24"},
		{what: "below the running engine", record: ptr("20.10.24"), running: "99.0.0", previous: &packs.Ref{Path: "/packs/old.iso", Digest: strings.Repeat("a", 64), Engine: "20.10.24+dfsg1"}, refused: true, names: []string{"20.10.24+dfsg1", "99.0.0"}, engine: "20.10.24+dfsg1"},
		{what: "to a version that does not read", record: ptr("20.10.24"), previous: &packs.Ref{Path: "/packs/odd.iso", Digest: strings.Repeat("a", 64), Engine: "nightly"}, refused: true, names: []string{"nightly", "20.10.24", "cannot be compared"}, engine: "nightly"},
		{what: "to a pack whose version is not known", record: ptr("20.10.24"), previous: &packs.Ref{Path: "/packs/gone.iso", Digest: strings.Repeat("a", 64)}, refused: true, names: []string{"/packs/gone.iso", `""`, "20.10.24"}},
		{what: "to the same engine", record: ptr("20.10.24+dfsg1-1"), running: "20.10.24+dfsg1-1", previous: &packs.Ref{Path: "/packs/same.iso", Digest: strings.Repeat("a", 64), Engine: "v20.10.24"}, engine: "v20.10.24"},
		{what: "to a cached pack whose version was not kept", record: ptr("20.10.24"), previous: &packs.Ref{Path: cached, Digest: cachedDigest}, engine: "24.0.5"},
	} {
		t.Run(c.what, func(t *testing.T) {
			for _, force := range []bool{false, true} {
				l := storeLauncher(t, c.record, packs.Choice{Current: current, Previous: c.previous})
				before, _ := os.ReadFile(l.ds.Path(packs.ChoiceFile))
				api := packAPI{l: l, running: c.running, runningDigest: map[bool]string{true: "bb"}[c.running != ""]}
				code, msg := putPack(t, api, fmt.Sprintf(`{"rollback": true, "force": %v}`, force))
				if c.refused && !force {
					after, _ := os.ReadFile(l.ds.Path(packs.ChoiceFile))
					if code != http.StatusConflict || !bytes.Equal(before, after) {
						t.Fatalf("answered %d %q; want 409 and the choice unchanged (%s)", code, msg, after)
					}
					for _, n := range append(c.names, "force") {
						if !strings.Contains(msg, n) {
							t.Errorf("the refusal %q does not say %q", msg, n)
						}
					}
					continue
				}
				choice, _ := packs.LoadChoice(l.ds.Path(packs.ChoiceFile))
				if code != http.StatusOK || choice.Current == nil || choice.Current.Path != c.previous.Path || choice.Current.Engine != c.engine || choice.Previous == nil || choice.Previous.Path != current.Path || choice.Trial {
					t.Fatalf("force %v: answered %d %q, choice %+v %+v; want 200 and the previous pack chosen", force, code, msg, choice.Current, choice.Previous)
				}
			}
		})
	}
	l := storeLauncher(t, ptr("20.10.24"), packs.Choice{Current: current})
	if code, msg := putPack(t, packAPI{l: l}, `{"rollback": true, "force": true}`); code != http.StatusPreconditionFailed {
		t.Fatalf("a rollback with no previous pack: %d %q; want 412", code, msg)
	}
}

// The config's pack, which runs, keeps its dockerd version as the pack
// to roll back to: a rollback to it is checked against what it is, not
// refused as unknown.
func TestRollbackToTheConfigsPack(t *testing.T) {
	img, _ := makeVersionPack(t, "24.0.5")
	l := storeLauncher(t, ptr("20.10.24"), packs.Choice{})
	// Only its digest is read (from its sidecar): its image is not one.
	l.cfg.VersionPack = filepath.Join(t.TempDir(), "docker.iso")
	os.WriteFile(l.cfg.VersionPack, []byte("the running pack"), 0o644)
	sum := sha256.Sum256([]byte("the running pack"))
	running, runningDigest := "20.10.24+dfsg1-1", hex.EncodeToString(sum[:])
	os.WriteFile(l.cfg.VersionPack+".sha256", []byte(runningDigest+"  docker.iso\n"), 0o644)
	api := packAPI{l: l, running: running, runningDigest: runningDigest}
	if code, msg := putPack(t, api, fmt.Sprintf(`{"path": %q}`, img)); code != http.StatusOK {
		t.Fatalf("use: %d %q", code, msg)
	}
	choice, _ := packs.LoadChoice(l.ds.Path(packs.ChoiceFile))
	if choice.Previous == nil || choice.Previous.Engine != running {
		t.Fatalf("the previous pack: %+v; want the config's, dockerd %s", choice.Previous, running)
	}
	if code, msg := putPack(t, api, `{"rollback": true}`); code != http.StatusOK {
		t.Fatalf("rollback to the config's pack: %d %q", code, msg)
	}
}

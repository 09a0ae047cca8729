package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPack is one of the version packs `make test-packs` builds
// (scripts/mktestpacks.sh): pack2 (its dockerd says pack=2 in docker
// info), broken (its dockerd exits at once, saying so), newer (it claims
// dockerd 99.0.0).
func testPack(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot, "build", "test-packs", name+".iso")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make test-packs` (make test does)", p)
	}
	return p
}

func (in *instance) packLabel() string {
	return strings.TrimSpace(in.docker("info", "--format", "{{json .Labels}}"))
}

// A switch to a second pack at the next boot, and back: the container
// with a restart policy comes back, the volume's data and the image are
// there, both ways. Only one engine version exists on these machines: the
// second pack differs by its dockerd's label.
func TestVersionPackSwitchAndBack(t *testing.T) {
	requireEnvironment(t)
	second := testPack(t, "pack2")
	data, _ := newDirs(t)
	in := start(t, options{dataDir: data})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	in.docker("run", "-d", "--name", "keeper", "--restart", "always", "-v", "packvol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f; exec sleep 3600")
	if out, err := in.cli("pack", "use", second); err != nil || !strings.Contains(out, "next boot") {
		t.Fatalf("ddinit pack use: %v\n%s", err, out)
	}
	if strings.Contains(in.packLabel(), "pack=2") {
		t.Fatal("the switch happened before the next boot")
	}
	check := func(in *instance, wantLabel bool) {
		t.Helper()
		if got := strings.Contains(in.packLabel(), "pack=2"); got != wantLabel {
			t.Fatalf("docker info labels %s; want pack=2: %v", in.packLabel(), wantLabel)
		}
		waitUntil(t, 30*time.Second, "the restart-policy container to be back", func() bool {
			out, _ := in.dockerErr("inspect", "-f", "{{.State.Running}}", "keeper")
			return strings.TrimSpace(out) == "true"
		})
		if out := in.docker("run", "--rm", "-v", "packvol:/d", "busybox:local", "cat", "/d/f"); out != "kept\n" {
			t.Fatalf("the volume's data: %q", out)
		}
	}
	for _, to := range []struct {
		pack  string
		label bool
	}{{second, true}, {packISO, false}} {
		if to.pack == packISO {
			if out, err := in.cli("pack", "use", packISO); err != nil {
				t.Fatalf("ddinit pack use back: %v\n%s", err, out)
			}
		}
		in.stop()
		in = start(t, options{dataDir: data})
		in.waitPing(60 * time.Second)
		check(in, to.label)
		var st struct {
			Packs struct {
				Running  struct{ Path string }
				Previous *struct{ Path string }
			}
		}
		_, body := in.get(http.MethodGet, "/status")
		json.Unmarshal([]byte(body), &st)
		if st.Packs.Running.Path == "" || st.Packs.Previous == nil {
			t.Fatalf("/status packs: %s", body[:min(len(body), 400)])
		}
	}
}

// A pack whose dockerd cannot start rolls back by itself, within the
// deadline, in the same run: the engine answers on the old pack, /status
// says why with dockerd's own words, and nothing is lost.
func TestBrokenVersionPackRollsBack(t *testing.T) {
	requireEnvironment(t)
	broken := testPack(t, "broken")
	data, _ := newDirs(t)
	cfg := map[string]any{"settingsDeadline": "15s"}
	in := start(t, options{dataDir: data, config: cfg})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	in.docker("volume", "create", "survivor")
	if out, err := in.cli("pack", "use", broken); err != nil {
		t.Fatalf("ddinit pack use: %v\n%s", err, out)
	}
	in.stop()
	in = start(t, options{dataDir: data, config: cfg})
	begin := time.Now()
	waitUntil(t, 90*time.Second, "the rollback to answer", func() bool { return ping(in.sock) == nil })
	t.Logf("the engine answered on the old pack %s after the boot on the broken one began", time.Since(begin).Round(time.Millisecond))
	var st struct {
		Packs struct{ LastFailure string }
	}
	_, body := in.get(http.MethodGet, "/status")
	json.Unmarshal([]byte(body), &st)
	if !strings.Contains(st.Packs.LastFailure, "this pack is broken") {
		t.Fatalf("/status does not say why the pack was rolled back: %q", st.Packs.LastFailure)
	}
	if out := in.docker("volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "survivor") {
		t.Fatalf("volumes after the rollback: %q", out)
	}
	if out := in.docker("images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, "busybox:local") {
		t.Fatalf("images after the rollback: %q", out)
	}
}

// Refused before anything changes: a wrong digest, a truncated pack, a
// pack without dockerd; and going back to an older engine than the data
// store ran, by a switch or a rollback, is a 409 naming both versions
// until forced.
func TestVersionPackRefusals(t *testing.T) {
	requireEnvironment(t)
	noDockerd := customPack(t, func(root string) { os.RemoveAll(filepath.Join(root, "containers/services/dockerd")) })
	newer := testPack(t, "newer")
	truncated := filepath.Join(t.TempDir(), "docker.iso")
	b, _ := os.ReadFile(packISO)
	os.WriteFile(truncated, b[:len(b)/3], 0o644)
	writeSidecar(t, truncated)

	data, _ := newDirs(t)
	in := start(t, options{dataDir: data})
	in.waitPing(60 * time.Second)
	for what, args := range map[string][]string{
		"a wrong digest":     {"pack", "use", "--digest", strings.Repeat("0", 64), packISO},
		"a truncated pack":   {"pack", "use", truncated},
		"a pack w/o dockerd": {"pack", "use", noDockerd},
	} {
		out, err := in.cli(args...)
		if err == nil || !strings.Contains(out, "400") {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		if ping(in.sock) != nil {
			t.Fatalf("the engine stopped answering after %s", what)
		}
	}
	if out, err := in.cli("pack", "use", newer); err != nil {
		t.Fatalf("the newer pack: %v\n%s", err, out)
	}
	in.stop()
	in = start(t, options{dataDir: data})
	in.waitPing(60 * time.Second)
	out, err := in.cli("pack", "use", packISO)
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "older") || !strings.Contains(out, "99.0.0") {
		t.Fatalf("back to an older engine: %v\n%s", err, out)
	}
	// The previous pack, the config's, has the older dockerd too.
	out, err = in.cli("pack", "rollback")
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "older") || !strings.Contains(out, "99.0.0") || !strings.Contains(out, "20.10") {
		t.Fatalf("a rollback to an older engine: %v\n%s", err, out)
	}
	if st := in.status(); st.Packs == nil || st.Packs.Next == nil || !strings.HasSuffix(st.Packs.Next.Path, "newer.iso") {
		t.Fatalf("the refused rollback changed the choice: %+v", st.Packs)
	}
	if out, err := in.cli("pack", "rollback", "--force"); err != nil {
		t.Fatalf("a forced rollback: %v\n%s", err, out)
	}
	if out, err := in.cli("pack", "use", packISO, "--force"); err != nil {
		t.Fatalf("forced: %v\n%s", err, out)
	}
}

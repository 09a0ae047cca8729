package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// A switch to a second pack at the next boot, and back: the container
// with a restart policy comes back, the volume's data and the image are
// there, both ways. Only one engine version exists on these machines: the
// second pack differs by its dockerd's label.
func TestVersionPackSwitchAndBack(t *testing.T) {
	harness.RequireEnvironment(t)
	second := harness.TestPack(t, "pack2")
	data, _ := harness.NewDirs(t)
	in := harness.Start(t, harness.Options{DataDir: data})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	in.Docker("run", "-d", "--name", "keeper", "--restart", "always", "-v", "packvol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f; exec sleep 3600")
	if out, err := in.CLI("pack", "use", second); err != nil || !strings.Contains(out, "next boot") {
		t.Fatalf("ddinit pack use: %v\n%s", err, out)
	}
	if strings.Contains(in.Labels(), "pack=2") {
		t.Fatal("the switch happened before the next boot")
	}
	check := func(in *harness.Instance, wantLabel bool) {
		t.Helper()
		if got := strings.Contains(in.Labels(), "pack=2"); got != wantLabel {
			t.Fatalf("docker info labels %s; want pack=2: %v", in.Labels(), wantLabel)
		}
		harness.WaitUntil(t, 30*time.Second, "the restart-policy container to be back", func() bool {
			out, _ := in.DockerErr("inspect", "-f", "{{.State.Running}}", "keeper")
			return strings.TrimSpace(out) == "true"
		})
		if out := in.Docker("run", "--rm", "-v", "packvol:/d", "busybox:local", "cat", "/d/f"); out != "kept\n" {
			t.Fatalf("the volume's data: %q", out)
		}
	}
	for _, to := range []struct {
		pack  string
		label bool
	}{{second, true}, {harness.PackISO, false}} {
		if to.pack == harness.PackISO {
			if out, err := in.CLI("pack", "use", harness.PackISO); err != nil {
				t.Fatalf("ddinit pack use back: %v\n%s", err, out)
			}
		}
		in.Stop()
		in = harness.Start(t, harness.Options{DataDir: data})
		in.WaitPing(60 * time.Second)
		check(in, to.label)
		var st struct {
			Packs struct {
				Running  struct{ Path string }
				Previous *struct{ Path string }
			}
		}
		_, body := in.Get(http.MethodGet, "/status")
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
	harness.RequireEnvironment(t)
	broken := harness.TestPack(t, "broken")
	data, _ := harness.NewDirs(t)
	cfg := map[string]any{"settingsDeadline": "15s"}
	in := harness.Start(t, harness.Options{DataDir: data, Config: cfg})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	in.Docker("volume", "create", "survivor")
	if out, err := in.CLI("pack", "use", broken); err != nil {
		t.Fatalf("ddinit pack use: %v\n%s", err, out)
	}
	in.Stop()
	in = harness.Start(t, harness.Options{DataDir: data, Config: cfg})
	begin := time.Now()
	harness.WaitUntil(t, 90*time.Second, "the rollback to answer", func() bool { return harness.Ping(in.Sock) == nil })
	t.Logf("the engine answered on the old pack %s after the boot on the broken one began", time.Since(begin).Round(time.Millisecond))
	var st struct {
		Packs struct{ LastFailure string }
	}
	_, body := in.Get(http.MethodGet, "/status")
	json.Unmarshal([]byte(body), &st)
	if !strings.Contains(st.Packs.LastFailure, "this pack is broken") {
		t.Fatalf("/status does not say why the pack was rolled back: %q", st.Packs.LastFailure)
	}
	if out := in.Docker("volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "survivor") {
		t.Fatalf("volumes after the rollback: %q", out)
	}
	if out := in.Docker("images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, "busybox:local") {
		t.Fatalf("images after the rollback: %q", out)
	}
}

// Refused before anything changes: a wrong digest, a truncated pack, a
// pack without dockerd; and going back to an older engine than the data
// store ran, by a switch or a rollback, is a 409 naming both versions
// until forced.
func TestVersionPackRefusals(t *testing.T) {
	harness.RequireEnvironment(t)
	noDockerd := harness.CustomPack(t, func(root string) { os.RemoveAll(filepath.Join(root, "containers/services/dockerd")) })
	newer := harness.TestPack(t, "newer")
	truncated := filepath.Join(t.TempDir(), "docker.iso")
	b, _ := os.ReadFile(harness.PackISO)
	os.WriteFile(truncated, b[:len(b)/3], 0o644)
	harness.WriteSidecar(t, truncated)

	data, _ := harness.NewDirs(t)
	in := harness.Start(t, harness.Options{DataDir: data})
	in.WaitPing(60 * time.Second)
	for what, args := range map[string][]string{
		"a wrong digest":     {"pack", "use", "--digest", strings.Repeat("0", 64), harness.PackISO},
		"a truncated pack":   {"pack", "use", truncated},
		"a pack w/o dockerd": {"pack", "use", noDockerd},
	} {
		out, err := in.CLI(args...)
		if err == nil || !strings.Contains(out, "400") {
			t.Fatalf("%s: %v\n%s", what, err, out)
		}
		if harness.Ping(in.Sock) != nil {
			t.Fatalf("the engine stopped answering after %s", what)
		}
	}
	if out, err := in.CLI("pack", "use", newer); err != nil {
		t.Fatalf("the newer pack: %v\n%s", err, out)
	}
	in.Stop()
	in = harness.Start(t, harness.Options{DataDir: data})
	in.WaitPing(60 * time.Second)
	out, err := in.CLI("pack", "use", harness.PackISO)
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "older") || !strings.Contains(out, "99.0.0") {
		t.Fatalf("back to an older engine: %v\n%s", err, out)
	}
	// The previous pack, the config's, has the older dockerd too.
	out, err = in.CLI("pack", "rollback")
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "older") || !strings.Contains(out, "99.0.0") || !strings.Contains(out, harness.PackDockerVersion) {
		t.Fatalf("a rollback to an older engine: %v\n%s", err, out)
	}
	if st := in.Status(); st.Packs == nil || st.Packs.Next == nil || !strings.HasSuffix(st.Packs.Next.Path, "newer.iso") {
		t.Fatalf("the refused rollback changed the choice: %+v", st.Packs)
	}
	if out, err := in.CLI("pack", "rollback", "--force"); err != nil {
		t.Fatalf("a forced rollback: %v\n%s", err, out)
	}
	if out, err := in.CLI("pack", "use", harness.PackISO, "--force"); err != nil {
		t.Fatalf("forced: %v\n%s", err, out)
	}
}

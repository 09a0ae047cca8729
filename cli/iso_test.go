package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeISO writes a small Rock Ridge image with a sidecar.
func makeISO(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Fatal("xorriso is not installed (make deps installs it)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("docker-desktop\n"), 0o644)
	os.Symlink("etc/hostname", filepath.Join(src, "link"))
	img := filepath.Join(dir, "test.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-o", img, src).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, b)
	}
	b, _ := os.ReadFile(img)
	sum := sha256.Sum256(b)
	os.WriteFile(img+".sha256", []byte(hex.EncodeToString(sum[:])+"  test.iso\n"), 0o644)
	return img
}

func run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestISOCommands(t *testing.T) {
	img := makeISO(t)
	code, out, _ := run("iso", "ls", img)
	if code != 0 || !strings.Contains(out, "/etc/hostname") || !strings.Contains(out, "/link -> etc/hostname") {
		t.Fatalf("iso ls: %d\n%s", code, out)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if code, out, errOut := run("iso", "extract", img, dir); code != 0 {
		t.Fatalf("iso extract: %d %s %s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "link")); err != nil || string(b) != "docker-desktop\n" {
		t.Fatalf("extracted link reads %q %v", b, err)
	}
	code, out, _ = run("iso", "verify", img)
	if code != 0 || !strings.Contains(out, "OK sha256:") {
		t.Fatalf("iso verify: %d %s", code, out)
	}
}

func TestISOVerifyFailuresAreOneClearLine(t *testing.T) {
	img := makeISO(t)
	wrong := strings.Repeat("0", 64)
	code, _, errOut := run("iso", "verify", img, wrong)
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "sha256 mismatch") || !strings.Contains(errOut, wrong) || !strings.Contains(errOut, img) {
		t.Fatalf("wrong digest: %d %q", code, errOut)
	}
	os.Remove(img + ".sha256")
	code, _, errOut = run("iso", "verify", img)
	if code != 1 || !strings.Contains(errOut, ".sha256 is missing") || !strings.Contains(errOut, "its sha256 is ") {
		t.Fatalf("no sidecar: %d %q", code, errOut)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.iso")
	os.WriteFile(garbage, bytes.Repeat([]byte("junk"), 20000), 0o644)
	code, _, errOut = run("iso", "ls", garbage)
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "garbage.iso") || !strings.Contains(errOut, "CD001") {
		t.Fatalf("garbage image: %d %q", code, errOut)
	}
	code, _, errOut = run("iso", "extract", img)
	if code != 2 || !strings.Contains(errOut, "usage") {
		t.Fatalf("missing argument: %d %q", code, errOut)
	}
}

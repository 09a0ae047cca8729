package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ddinit/ddinit/iso9660"
)

// TestPack is one of the version packs `make test-packs` builds
// (scripts/mktestpacks.sh): pack2 (its dockerd says pack=2 in docker
// info), broken (its dockerd exits at once, saying so), newer (it claims
// dockerd 99.0.0).
func TestPack(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot, "build", "test-packs", name+".iso")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing: run `make test-packs` (make test does)", p)
	}
	return p
}

// CustomPack writes a version pack: build/docker.iso's tree changed by
// modify, with its sidecar.
func CustomPack(t testing.TB, modify func(root string)) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	img, err := iso9660.OpenFile(PackISO)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	entries, err := img.Walk()
	if err != nil {
		t.Fatal(err)
	}
	if err := iso9660.ExtractAtomic(img, entries, tree, iso9660.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	modify(tree)
	out := filepath.Join(dir, "docker.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", out, tree).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, b)
	}
	WriteSidecar(t, out)
	return out
}

// WriteSidecar writes iso's .sha256 sidecar (the digest ddinit checks).
func WriteSidecar(t testing.TB, iso string) {
	b, err := os.ReadFile(iso)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if err := os.WriteFile(iso+".sha256", []byte(hex.EncodeToString(sum[:])+"  "+filepath.Base(iso)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// AddService writes a service definition into a version pack tree.
func AddService(t testing.TB, root, name string, args []string, annotations map[string]string) {
	spec := map[string]any{
		"ociVersion":  "1.0.2",
		"process":     map[string]any{"args": args, "cwd": "/", "env": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}},
		"root":        map[string]any{"path": "/"},
		"linux":       map[string]any{},
		"annotations": annotations,
	}
	b, _ := json.MarshalIndent(spec, "", "  ")
	dir := filepath.Join(root, "containers", "services", name)
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// BuildStatic builds one of e2e/testdata's programs (dnsprobe, dnsflood
// …), static, to copy into a busybox container, and returns its path.
func BuildStatic(t testing.TB, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", out, "./e2e/testdata/"+name)
	build.Dir = RepoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v %s", name, err, b)
	}
	return out
}

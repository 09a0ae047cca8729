package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/e2e/harness"
)

// make isos again from the same inputs gives the same bytes as the
// images the tests run on (build/, which make test's isos step made
// before them, minutes earlier).
func TestImagesAreReproducible(t *testing.T) {
	harness.RequireEnvironment(t)
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(harness.RepoRoot, "scripts", "mkisos.sh"))
	cmd.Env = append(os.Environ(), "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkisos: %v\n%s", err, b)
	}
	for _, name := range []string{"docker-desktop.iso", "docker.iso", "cli-tools.iso", "kubernetes.iso"} {
		var digests [2]string
		for i, dir := range []string{filepath.Join(harness.RepoRoot, "build"), out} {
			b, err := os.ReadFile(filepath.Join(dir, name+".sha256"))
			if err != nil {
				t.Fatal(err)
			}
			digests[i] = strings.Fields(string(b))[0]
		}
		if digests[0] != digests[1] {
			t.Errorf("%s: built again, it differs: %s in build/, %s now", name, digests[0], digests[1])
		}
	}
}

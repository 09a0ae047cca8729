package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/e2e/harness"
)

// make isos twice from the same inputs gives the same bytes.
func TestImagesAreReproducible(t *testing.T) {
	harness.RequireEnvironment(t)
	var digests [2]string
	for i := range digests {
		out := t.TempDir()
		cmd := exec.Command("bash", filepath.Join(harness.RepoRoot, "scripts", "mkisos.sh"))
		cmd.Env = append(os.Environ(), "OUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mkisos: %v\n%s", err, b)
		}
		for _, name := range []string{"docker-desktop.iso", "docker.iso", "cli-tools.iso", "kubernetes.iso"} {
			b, err := os.ReadFile(filepath.Join(out, name+".sha256"))
			if err != nil {
				t.Fatal(err)
			}
			digests[i] += strings.Fields(string(b))[0] + " "
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds differ: %s vs %s", digests[0], digests[1])
	}
}

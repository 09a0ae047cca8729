package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RootEnv opts the tests that need root in: DDINIT_TEST_ROOT=1 (make test
// sets it; make unit does not).
const RootEnv = "DDINIT_TEST_ROOT"

// RequiresRoot skips t unless root-only tests are opted in (RootEnv), and
// fails it when they are but the test does not run as root.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Getenv(RootEnv) != "1" {
		t.Skipf("needs root (mounts, namespaces, devices or the real engine): set %s=1 as root (make test does)", RootEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but the tests do not run as root", RootEnv)
	}
}

// RequireTool returns the path of tool, failing t when it is not
// installed: the suite needs it (make deps installs it).
func RequireTool(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): the suite needs it", tool)
	}
	return p
}

// XorrisoImage fills a fresh source tree with populate and writes it as
// an ISO image with xorriso -as mkisofs and args; it returns the image's
// bytes.
func XorrisoImage(t testing.TB, populate func(src string), args ...string) []byte {
	t.Helper()
	_, b := XorrisoTree(t, populate, args...)
	return b
}

// XorrisoTree is XorrisoImage that also returns the source tree.
func XorrisoTree(t testing.TB, populate func(src string), args ...string) (src string, image []byte) {
	t.Helper()
	RequireTool(t, "xorriso")
	dir := t.TempDir()
	src = filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	populate(src)
	out := filepath.Join(dir, "image.iso")
	cmd := exec.Command("xorriso", append(append([]string{"-as", "mkisofs"}, args...), "-o", out, src)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return src, b
}

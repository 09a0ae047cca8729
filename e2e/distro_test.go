package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The distro tarball (make distro) boots ddinit the way WSL would: its
// wsl.conf names a ddinit that exists and runs inside that root.
func TestDistroTarball(t *testing.T) {
	harness.RequireEnvironment(t)
	tarball := filepath.Join(harness.RepoRoot, "build", "distro.tar")
	if _, err := os.Stat(tarball); err != nil {
		t.Fatalf("%s is missing: run make distro (make test does)", tarball)
	}
	root := t.TempDir()
	if out, err := exec.Command("tar", "-C", root, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	conf, err := os.ReadFile(filepath.Join(root, "etc/wsl.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var command string
	for _, line := range strings.Split(string(conf), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "command" {
			command = strings.TrimSpace(v)
		}
	}
	if !strings.HasPrefix(command, "/usr/bin/ddinit run") || !strings.Contains(string(conf), "root = /mnt/host") {
		t.Fatalf("wsl.conf does not boot ddinit with automount root /mnt/host:\n%s", conf)
	}
	out, err := exec.Command("chroot", root, "/usr/bin/ddinit", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "run") {
		t.Fatalf("ddinit inside the distro: %v %s", err, out)
	}
	out, err = exec.Command("chroot", root, "/bin/sh", "-c", "echo shell works").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "shell works" {
		t.Fatalf("busybox shell inside the distro: %v %s", err, out)
	}
	cfgPath := strings.Fields(command)[3]
	if _, err := os.Stat(filepath.Join(root, cfgPath)); err != nil {
		t.Fatalf("wsl.conf names %s, which the distro lacks", cfgPath)
	}
}

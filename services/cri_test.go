package services

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/internal/testutil"
)

// The CRI section of the configuration, in each format: the sandbox
// image pinned, the OOM restriction as asked, CNI's folders.
func TestCRIConfigurationForEachVersion(t *testing.T) {
	cri := &CRI{SandboxImage: "ddinit.local/pause:1", RuntimeBinary: "/usr/sbin/runc", CNIBinDirs: []string{"/usr/lib/cni"}, CNIConfDir: "/etc/cni/net.d", RestrictOOMScoreAdj: true}
	for version, want := range map[int][]string{
		2: {`sandbox_image = "ddinit.local/pause:1"`, `bin_dir = "/usr/lib/cni"`, "restrict_oom_score_adj = true"},
		4: {`sandbox = "ddinit.local/pause:1"`, `bin_dirs = ["/usr/lib/cni"]`, "restrict_oom_score_adj = true", `BinaryName = "/usr/sbin/runc"`},
	} {
		conf := ContainerdConfig("/r", "/s", "/a.sock", version, cri)
		for _, w := range want {
			if !strings.Contains(conf, w) {
				t.Errorf("%d: no %s in\n%s", version, w, conf)
			}
		}
		for _, p := range criPlugins(version) {
			if strings.Contains(conf, "  \""+p+"\",") {
				t.Errorf("%d: %s still disabled:\n%s", version, p, conf)
			}
		}
		if off := ContainerdConfig("/r", "/s", "/a.sock", version, nil); strings.Contains(off, "pinned_images") || strings.Contains(off, "sandbox_image") {
			t.Errorf("%d: CRI configured while off:\n%s", version, off)
		}
	}
}

// The real containerds load the CRI plugins with the configuration ddinit
// writes (the pack's 2.4 from the engine's build, Debian's 1.6 of the
// 20.10 pack), and leave them off without it: as their own introspection
// says, asked by Debian's ctr.
func TestContainerdLoadsCRIWithTheConfiguration(t *testing.T) {
	testutil.RequiresRoot(t)
	ctr := testutil.RequireTool(t, "ctr")
	binaries := map[string]string{}
	if debian, err := exec.LookPath("containerd"); err == nil {
		binaries["1.6"] = debian
	}
	if dir, err := exec.Command("bash", "../scripts/build-engine.sh", "--cached").Output(); err == nil {
		binaries["2.4"] = filepath.Join(strings.TrimSpace(string(dir)), "containerd")
	}
	if len(binaries) == 0 {
		t.Skip("no containerd: neither Debian's nor the engine's build (make isos)")
	}
	for name, bin := range binaries {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatalf("%s --version: %v", bin, err)
		}
		fields := strings.Fields(string(out))
		version := ContainerdConfigVersion(fields[len(fields)-2])
		for _, on := range []bool{true, false} {
			t.Run(name+map[bool]string{true: " on", false: " off"}[on], func(t *testing.T) {
				var cri *CRI
				if on {
					cri = &CRI{SandboxImage: "ddinit.local/pause:1", RuntimeBinary: "runc", CNIBinDirs: []string{"/usr/lib/cni"}, CNIConfDir: t.TempDir(), RestrictOOMScoreAdj: !CanLowerOOMScores()}
				}
				status := criStatus(t, bin, ctr, version, cri)
				for _, p := range criPlugins(version) {
					got := status[p]
					if on && got != "ok" || !on && got == "ok" {
						t.Errorf("%s: %q (all: %v)", p, got, status)
					}
				}
			})
		}
	}
}

// criStatus starts containerd with the configuration in a scratch folder
// and returns what its introspection says of each plugin ("ok", "skip",
// "error"), by id.
func criStatus(t *testing.T, bin, ctr string, version int, cri *CRI) map[string]string {
	dir, err := os.MkdirTemp("", "ddinit-cri-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "c.sock")
	conf := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(conf, []byte(ContainerdConfig(filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, version, cri)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", bin, "--config", conf)
	// Its output goes to a file, read while it runs (no goroutine of
	// ours copies it).
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	log := func() string {
		b, _ := os.ReadFile(logFile.Name())
		return string(b)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	for {
		out, err := exec.CommandContext(ctx, ctr, "--address", sock, "plugins", "ls").CombinedOutput()
		if err == nil {
			status := map[string]string{}
			sc := bufio.NewScanner(strings.NewReader(string(out)))
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) >= 4 {
					status[f[0]+"."+f[1]] = f[len(f)-1]
				}
			}
			if strings.Contains(log(), "Configuration migrated") {
				t.Errorf("containerd migrated the configuration")
			}
			return status
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("containerd did not answer: %v\n%s\n%s", err, out, log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/services"
)

// TestBenchContainerdStart measures what leaving out the plugins nothing
// here uses saves at every start: each pack's containerd started with the
// configuration ddinit writes and with containerd's own defaults (the same
// root, state and socket, every plugin on), in alternating rounds on state
// each has started on once, timed until it answers a version call.
func TestBenchContainerdStart(t *testing.T) {
	requireBench(t)
	harness.RequireEnvironment(t)
	runs := 10
	for _, packISO := range []string{harness.PackISO, harness.Pack2010ISO} {
		base, pack := bareRoot(t, packISO)
		version := packContainerdConfigVersion(t, pack)
		ours := services.ContainerdConfig("/var/lib/containerd", "/run/containerd", "/var/lib/containerd.sock", version, nil)
		// The same file with no plugin disabled: the same root, state and
		// listeners, in the same format.
		defaults := regexp.MustCompile(`(?s)disabled_plugins = \[.*?\]\n`).ReplaceAllString(ours, "")
		if defaults == ours {
			t.Fatalf("no disabled plugins to leave out in:\n%s", ours)
		}
		oursDir, defaultsDir := t.TempDir(), t.TempDir()
		startContainerdBare(t, oursDir, base, pack, ours)
		startContainerdBare(t, defaultsDir, base, pack, defaults)
		var withOurs, withDefaults []time.Duration
		for range runs {
			withOurs = append(withOurs, startContainerdBare(t, oursDir, base, pack, ours))
			withDefaults = append(withDefaults, startContainerdBare(t, defaultsDir, base, pack, defaults))
		}
		o, d := median(withOurs), median(withDefaults)
		t.Logf("BENCH [%s, containerd config version %d] containerd's start to its first answer, %d alternating rounds: ddinit's configuration %v, containerd's defaults %v, ratio %.2f (spread %s)",
			filepath.Base(packISO), version, runs, o.Round(time.Millisecond), d.Round(time.Millisecond), float64(o)/float64(d), ratioSpread(withOurs, withDefaults))
	}
}

// startContainerdBare starts the pack's containerd with conf, chrooted
// into the pack over the base in fresh mount and pid namespaces with its
// state under dir (as bootBare does), and returns the time until it
// answers a version call; it stops it before returning.
func startContainerdBare(t *testing.T, dir, base, pack, conf string) time.Duration {
	sock := filepath.Join(dir, "containerd.sock")
	os.Remove(sock)
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	os.MkdirAll(filepath.Join(dir, "upper"), 0o755)
	os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(conf), 0o644)
	script := bareRootScript(dir, base, pack, root) + fmt.Sprintf(`exec chroot %[2]s containerd --config /var/lib/containerd.toml >%[1]s/containerd.log 2>&1
`, dir, root)
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	}()
	for time.Since(begin) < 30*time.Second {
		if _, err := os.Stat(sock); err == nil {
			if answered(sock) {
				return time.Since(begin)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
	t.Fatalf("containerd did not answer:\n%s", harness.Tail(string(log), 20))
	return 0
}

// answered reports whether the containerd at sock answers a version call.
func answered(sock string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := containerd.New(sock, containerd.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err == nil
}

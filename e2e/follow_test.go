package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// propagation is every mount of the distro with its propagation (shared:N,
// master:N), except those under skip.
func propagation(t *testing.T, skip string) map[string]string {
	t.Helper()
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range table {
		if m.Point != skip && !strings.HasPrefix(m.Point, skip+"/") {
			out[m.ID+" "+m.Point] = strings.Join(m.Optional, " ")
		}
	}
	return out
}

// within polls cond every 20 ms for up to d and reports how long it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return 0
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// The automount root is private, as WSL's is: a drive mounted after the
// boot still reaches containers within 2 s, and goes when it is
// unmounted; devices made in the distro's /dev after the boot reach
// docker run --device and go when removed; WSL's GPU paths (a stand-in
// /dev/dxg and /usr/lib/wsl: no GPU exists here) arrive as GPU containers
// use them. Nothing outside the automount root changes its propagation.
func TestDrivesAndDevicesFollowTheDistro(t *testing.T) {
	harness.RequireEnvironment(t)
	automount := filepath.Join(t.TempDir(), "host")
	os.MkdirAll(automount, 0o755)
	if m := mountHolding(t, automount); strings.Contains(m, "shared:") {
		t.Fatalf("the mount holding %s is shared (%s): the test would be friendlier than WSL", automount, m)
	}
	wslLib := filepath.Join(t.TempDir(), "wsl")
	os.MkdirAll(filepath.Join(wslLib, "lib"), 0o755)
	os.WriteFile(filepath.Join(wslLib, "lib", "libdxcore.so"), []byte("stand-in for WSL's GPU library\n"), 0o644)
	before := propagation(t, automount)

	in := harness.Start(t, harness.Options{Extra: []string{"--automount-root", automount, "--wsl-lib", wslLib}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	inside := fmt.Sprintf("/proc/%d/root", in.Pid1())

	// A drive mounted after the boot, under a private automount root.
	mountTmpfsWithFile(t, filepath.Join(automount, "y"), "late.txt", "drive Y came later")
	took := within(t, 2*time.Second, "drive Y inside the namespace", func() bool {
		return exists(inside + "/run/desktop/mnt/host/y/late.txt")
	})
	t.Logf("drive Y visible inside after %s", took.Round(time.Millisecond))
	if out := in.Docker("run", "--rm", "-v", "/run/desktop/mnt/host/y/late.txt:/f", "busybox:local", "cat", "/f"); out != "drive Y came later" {
		t.Fatalf("a container reads %q from the late drive", out)
	}
	if st := in.Status(); !slices.ContainsFunc(st.Drives, func(d control.Drive) bool { return d.Letter == "y" }) {
		t.Fatalf("status does not list drive y: %+v", st.Drives)
	}
	if err := unix.Unmount(filepath.Join(automount, "y"), 0); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "drive Y gone inside", func() bool {
		return !exists(inside + "/run/desktop/mnt/host/y/late.txt")
	})
	if out, err := in.DockerErr("run", "--rm", "-v", "/run/desktop/mnt/host/y/late.txt:/f", "busybox:local", "cat", "/f"); err == nil && strings.Contains(out, "came later") {
		t.Fatalf("an unmounted drive is still read: %q", out)
	}

	// A device node made after the boot.
	dev := fmt.Sprintf("/dev/ddinit-test-%d", os.Getpid())
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dev) })
	within(t, 2*time.Second, dev+" inside the namespace", func() bool { return exists(inside + dev) })
	if out := in.Docker("run", "--rm", "--device", dev, "busybox:local", "sh", "-c", "echo written > "+dev+" && echo device-ok"); !strings.Contains(out, "device-ok") {
		t.Fatalf("docker run --device %s: %q", dev, out)
	}
	os.Remove(dev)
	within(t, 2*time.Second, dev+" gone inside", func() bool { return !exists(inside + dev) })
	if out, err := in.DockerErr("run", "--rm", "--device", dev, "busybox:local", "true"); err == nil {
		t.Fatalf("docker run --device of a removed device succeeded: %q", out)
	}

	// GPU paravirtualization: /dev/dxg and /usr/lib/wsl, as on WSL.
	if !exists("/dev/dxg") {
		if err := unix.Mknod("/dev/dxg", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/dev/dxg") })
	}
	within(t, 2*time.Second, "/dev/dxg inside the namespace", func() bool { return exists(inside + "/dev/dxg") })
	out := in.Docker("run", "--rm", "--device", "/dev/dxg", "-v", "/usr/lib/wsl:/usr/lib/wsl:ro", "busybox:local",
		"sh", "-c", "cat /usr/lib/wsl/lib/libdxcore.so && echo frame > /dev/dxg && echo gpu-ok")
	if !strings.Contains(out, "stand-in for WSL's GPU library") || !strings.Contains(out, "gpu-ok") {
		t.Fatalf("a GPU-PV container: %q", out)
	}
	if err := os.WriteFile(inside+"/usr/lib/wsl/lib/x", nil, 0o644); err == nil {
		t.Fatal("/usr/lib/wsl is writable inside")
	}

	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	after := propagation(t, automount)
	for k, v := range before {
		if a, ok := after[k]; ok && a != v {
			t.Errorf("the propagation of %s changed: %q, was %q", k, a, v)
		}
	}
	if st, err := os.Lstat("/dev/ptmx"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("the distro's /dev/ptmx was changed: %v %v", st.Mode(), err)
	}
}

// mountHolding is the propagation of the mount that holds path.
func mountHolding(t *testing.T, path string) string {
	t.Helper()
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	best, opt := "", ""
	for _, m := range table {
		if (path == m.Point || strings.HasPrefix(path, strings.TrimSuffix(m.Point, "/")+"/")) && len(m.Point) >= len(best) {
			best, opt = m.Point, strings.Join(m.Optional, " ")
		}
	}
	return opt
}

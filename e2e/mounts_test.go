package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"golang.org/x/sys/unix"
)

// sharedDir makes dir a mount point of its own with shared propagation,
// the way WSL's /mnt/wsl is (and its automount root can be), and undoes
// it, with whatever was mounted under it, at the end of the test.
func sharedDir(t *testing.T, dir string, tmpfs bool) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	var err error
	if tmpfs {
		err = unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m")
	} else {
		err = unix.Mount(dir, dir, "", unix.MS_BIND, "")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
}

// newShared makes the tmpfs every distro shares (WSL's /mnt/wsl) for a
// test: outside /tmp, which a user distro has its own of.
func newShared(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("/var/tmp", "ddinit-wsl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	shared := filepath.Join(parent, "wsl")
	sharedDir(t, shared, true)
	return shared
}

func mountTmpfsWithFile(t *testing.T, dir, name, content string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A drive WSL mounted before the boot, and one mounted after it, are both
// readable from containers under /run/desktop/mnt/host/<letter>.
func TestWindowsDrives(t *testing.T) {
	harness.RequireEnvironment(t)
	automount := filepath.Join(t.TempDir(), "host")
	sharedDir(t, automount, false)
	mountTmpfsWithFile(t, filepath.Join(automount, "x"), "hello.txt", "from drive X")

	in := harness.Start(t, harness.Options{Extra: []string{"--automount-root", automount}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	if out := in.Docker("run", "--rm", "-v", "/run/desktop/mnt/host/x/hello.txt:/f", "busybox:local", "cat", "/f"); out != "from drive X" {
		t.Fatalf("drive x from a container: %q", out)
	}
	st := in.Status()
	if len(st.Drives) != 1 || st.Drives[0].Letter != "x" || st.Drives[0].Inside != "/run/desktop/mnt/host/x" {
		t.Fatalf("status drives: %+v", st.Drives)
	}

	mountTmpfsWithFile(t, filepath.Join(automount, "y"), "late.txt", "drive Y came later")
	if out := in.Docker("run", "--rm", "-v", "/run/desktop/mnt/host/y/late.txt:/f", "busybox:local", "cat", "/f"); out != "drive Y came later" {
		t.Fatalf("a drive mounted after boot is not visible: %q", out)
	}
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, d := range []string{"x", "y"} {
		if _, err := os.Stat(filepath.Join(automount, d, map[string]string{"x": "hello.txt", "y": "late.txt"}[d])); err != nil {
			t.Fatalf("drive %s lost after shutdown: %v", d, err)
		}
	}
	if m := harness.HostMounts(t, in.RunDir, in.DataDir); len(m) > 0 {
		t.Fatalf("mounts left:\n%s", strings.Join(m, "\n"))
	}
}

// Another distro, a mount namespace sharing /mnt/wsl, keeps its mounts
// and gets the docker socket back through a ddinit crash and a shutdown.
func TestSharedSocketsSurviveCrashAndShutdown(t *testing.T) {
	harness.RequireEnvironment(t)
	// Short: the socket is reached through /proc/PID/root/… and a unix
	// socket path has 107 bytes.
	wsl, err := os.MkdirTemp("/tmp", "wsl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wsl) })
	sharedDir(t, wsl, true)
	other := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	time.Sleep(100 * time.Millisecond)
	pid := fmt.Sprint(other.Process.Pid)
	if out, err := exec.Command("nsenter", "-t", pid, "-m", "-r", "-w", "sh", "-c", "mkdir -p "+wsl+"/other && mount -t tmpfs other "+wsl+"/other && echo mine > "+wsl+"/other/marker").CombinedOutput(); err != nil {
		t.Fatalf("other distro: %v %s", err, out)
	}
	otherSees := func(what string) {
		t.Helper()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%s/mountinfo", pid))
		if err != nil || !strings.Contains(string(b), wsl+"/other") {
			t.Fatalf("%s: the other distro lost its mount", what)
		}
		if m, err := os.ReadFile(fmt.Sprintf("/proc/%s/root%s/other/marker", pid, wsl)); err != nil || string(m) != "mine\n" {
			t.Fatalf("%s: the other distro's file: %q %v", what, m, err)
		}
	}
	sock := fmt.Sprintf("/proc/%s/root%s/docker-desktop/shared-sockets/docker.sock", pid, wsl)

	data, _ := harness.NewDirs(t)
	in := harness.Start(t, harness.Options{DataDir: data, Extra: []string{"--wsl-shared", wsl}})
	in.WaitPing(60 * time.Second)
	waitFor(t, "the shared docker socket", func() bool { return harness.Ping(sock) == nil })
	otherSees("running")

	// A crash: ddinit run killed outright takes PID 1 and the namespace
	// with it; the socket file stays behind, stale.
	in.Signal(syscall.SIGKILL)
	in.Exited(30 * time.Second)
	otherSees("after a crash")
	if harness.Ping(sock) == nil {
		t.Fatal("the shared socket answers with ddinit dead")
	}
	again := harness.Start(t, harness.Options{DataDir: data, Extra: []string{"--wsl-shared", wsl}})
	again.WaitPing(60 * time.Second)
	waitFor(t, "the shared docker socket after the restart", func() bool { return harness.Ping(sock) == nil })
	otherSees("restarted")
	if code, _ := again.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	otherSees("after a clean shutdown")
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("the shared socket was left behind by a clean shutdown")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A data store that fills up while the engine runs makes /ping 503 with
// the reason, and healthy again once there is room.
func TestDataStoreFullIsUnhealthy(t *testing.T) {
	harness.RequireEnvironment(t)
	data := t.TempDir()
	if err := unix.Mount("tmpfs", data, "tmpfs", 0, "size=512m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(data, unix.MNT_DETACH) })
	in := harness.Start(t, harness.Options{DataDir: data})
	in.WaitPing(60 * time.Second)
	// docker may answer a moment before the supervisor's own probe sees it.
	in.WaitHealthy(10 * time.Second)
	var fs unix.Statfs_t
	unix.Statfs(data, &fs)
	free := int64(fs.Bavail) * fs.Bsize
	filler := filepath.Join(data, "filler")
	f, _ := os.Create(filler)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, free-16<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, body := in.Get(http.MethodGet, "/ping")
	if code != 503 || !strings.Contains(body, "full") || !strings.Contains(body, data) {
		t.Fatalf("/ping with a full store: %d %q", code, body)
	}
	os.Remove(filler)
	if code, body := in.Get(http.MethodGet, "/ping"); code != 200 {
		t.Fatalf("/ping after freeing space: %d %s", code, body)
	}
}

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// wslWorld is ddinit with a shared tmpfs that is a peer in every distro,
// as /mnt/wsl is, outside /tmp (each distro has its own).
type wslWorld struct {
	t      *testing.T
	parent string // the folder holding the shared tmpfs
	shared string
	in     *harness.Instance
	data   string
}

func newWSLWorld(t *testing.T) *wslWorld {
	t.Helper()
	parent, err := os.MkdirTemp("/var/tmp", "ddinit-wsl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	w := &wslWorld{t: t, parent: parent, shared: filepath.Join(parent, "wsl")}
	sharedDir(t, w.shared, true)
	w.data, _ = harness.NewDirs(t)
	w.boot()
	w.in.ImportBusybox()
	return w
}

func (w *wslWorld) boot() {
	w.in = harness.Start(w.t, harness.Options{DataDir: w.data, Extra: []string{"--wsl-shared", w.shared}})
	w.in.WaitPing(60 * time.Second)
}

// mountinfo is a process's mount table.
func mountinfo(t *testing.T, pid int) []mounts.MountInfo {
	t.Helper()
	table, err := mounts.ReadMountinfo(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// bindCost is what binding sources from a distro with table may add to
// any distro's mount table: for each distinct source, its own mount and
// each mount below it, the shared tmpfs and what is below it left out.
func bindCost(table []mounts.MountInfo, shared string, sources ...string) int {
	n := 0
	for _, s := range sources {
		n++
		for _, m := range table {
			if m.Point != s && mounts.Within(m.Point, s) && !mounts.Within(m.Point, shared) {
				n++
			}
		}
	}
	return n
}

// From a distro, binds of sources that hold the shared tmpfs (/, /var, a
// parent of it) work without it inside, cost each distro no more than
// their own mounts however many containers use them, and are all taken
// down with their last container; a source inside the shared tmpfs is
// refused, saying why.
func TestBindsNeverFloodTheDistros(t *testing.T) {
	harness.RequireEnvironment(t)
	w := newWSLWorld(t)
	ubuntu, debian := newUserDistro(t, "Ubuntu"), newUserDistro(t, "Debian")
	ubuntu.sh(`echo mine > /home/user/mine`)
	ubuntu.startProxy(w.shared, "--bind-grace", "2s")
	sources := []string{"/", "/var", w.parent}
	beforeU, beforeD := mountinfo(t, ubuntu.pid), mountinfo(t, debian.pid)
	budget := bindCost(beforeU, w.shared, sources...)
	t.Logf("mount tables: Ubuntu %d, Debian %d; the binds may add %d", len(beforeU), len(beforeD), budget)

	for round := range 2 {
		for i, src := range sources {
			ubuntu.sh(fmt.Sprintf(`docker run -d --name b%d%d -v %s:/src busybox:local sleep 3600`, round, i, src))
		}
	}
	for round := range 2 {
		for i := range sources {
			if out := w.in.Docker("inspect", "-f", "{{.State.Running}}", fmt.Sprintf("b%d%d", round, i)); out != "true\n" {
				t.Fatalf("b%d%d is not running: %q", round, i, out)
			}
		}
	}
	// The distro's files are there; the shared tmpfs is an empty folder.
	if out := w.in.Docker("exec", "b00", "cat", "/src/home/user/mine"); out != "mine\n" {
		t.Fatalf("the distro's /home through -v /:/src: %q", out)
	}
	rel := strings.TrimPrefix(w.shared, "/")
	if out := w.in.Docker("exec", "b00", "ls", "-A", "/src/"+rel); out != "" {
		t.Fatalf("the shared tmpfs inside the bind of /: %q", out)
	}
	afterU, afterD := mountinfo(t, ubuntu.pid), mountinfo(t, debian.pid)
	t.Logf("with 6 containers: Ubuntu +%d, Debian +%d mounts", len(afterU)-len(beforeU), len(afterD)-len(beforeD))
	if len(afterU)-len(beforeU) > budget || len(afterD)-len(beforeD) > budget {
		t.Fatalf("the mount tables grew by %d (Ubuntu) and %d (Debian), more than %d", len(afterU)-len(beforeU), len(afterD)-len(beforeD), budget)
	}

	out, err := ubuntu.shErr(fmt.Sprintf(`docker run --rm -v %s/x:/x busybox:local true`, w.shared))
	if err == nil || !strings.Contains(out, "every WSL distro shares") {
		t.Fatalf("a source inside the shared tmpfs: %v %s", err, out)
	}

	ubuntu.sh(`docker rm -f b00 b01 b02 b10 b11 b12`)
	within(t, 20*time.Second, "both mount tables back where they were", func() bool {
		return len(mountinfo(t, ubuntu.pid)) == len(beforeU) && len(mountinfo(t, debian.pid)) == len(beforeD)
	})
}

// bindID is the proxy's name for a source's bind.
func bindID(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:8])
}

// outside lists the mounts of a table that are not under folder.
func outside(table []mounts.MountInfo, folder string) []string {
	var out []string
	for _, m := range table {
		if !mounts.Within(m.Point, folder) {
			out = append(out, m.Point+" "+m.Root+" "+m.Source)
		}
	}
	slices.Sort(out)
	return out
}

// Symlinks planted where a bind is made or taken down, or inside a
// source, never move a mount or an unmount out of the distro's folder.
func TestBindsFollowNoSymlink(t *testing.T) {
	harness.RequireEnvironment(t)
	w := newWSLWorld(t)
	ubuntu := newUserDistro(t, "Ubuntu")
	ubuntu.sh(`mkdir -p /home/user/a /home/user/b /home/user/c && echo a > /home/user/a/f && ln -s ` + w.shared + ` /home/user/b/to-shared && ln -s / /home/user/b/to-root`)
	ubuntu.startProxy(w.shared, "--bind-grace", "2s")
	folder := filepath.Join(w.shared, "docker-desktop-bind-mounts", "Ubuntu")
	check := func(what string, host, distro []string) {
		t.Helper()
		if now := outside(mountinfo(t, os.Getpid()), folder); !slices.Equal(now, host) {
			t.Fatalf("%s: the host's mounts outside %s changed:\nbefore %v\nafter  %v", what, folder, host, now)
		}
		if now := outside(mountinfo(t, ubuntu.pid), folder); !slices.Equal(now, distro) {
			t.Fatalf("%s: the distro's mounts outside %s changed", what, folder)
		}
	}
	host, distro := outside(mountinfo(t, os.Getpid()), folder), outside(mountinfo(t, ubuntu.pid), folder)

	// A symlink at the bind point, to the shared tmpfs and to /.
	for _, target := range []string{w.shared, "/"} {
		os.MkdirAll(folder, 0o755)
		point := filepath.Join(folder, bindID("/home/user/a"))
		os.Remove(point)
		if err := os.Symlink(target, point); err != nil {
			t.Fatal(err)
		}
		out, err := ubuntu.shErr(`docker run --rm -v /home/user/a:/a busybox:local cat /a/f`)
		if err == nil || !strings.Contains(out, "symlink") {
			t.Fatalf("a symlink at the bind point to %s: %v %s", target, err, out)
		}
		check("a symlink at the bind point to "+target, host, distro)
		os.Remove(point)
	}

	// Symlinks inside a source stay symlinks in the container.
	if out := ubuntu.sh(`docker run --rm -v /home/user/b:/b busybox:local sh -c 'busybox readlink /b/to-shared; busybox readlink /b/to-root'`); out != w.shared+"\n/\n" {
		t.Fatalf("symlinks inside a source: %q", out)
	}
	check("symlinks inside a source", host, distro)

	// The distro's folder swapped for a symlink to / while a bind is up:
	// taking it down unmounts nothing else.
	ubuntu.sh(`docker run -d --name cc -v /home/user/c:/c busybox:local sleep 3600`)
	moved := folder + ".moved"
	if err := os.Rename(folder, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", folder); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(moved, bindID("/home/user/c")), unix.MNT_DETACH) })
	host, distro = outside(mountinfo(t, os.Getpid()), folder), outside(mountinfo(t, ubuntu.pid), folder)
	ubuntu.sh(`docker rm -f cc`)
	time.Sleep(5 * time.Second) // past the grace and a sweep
	check("a symlink for the distro's folder at take-down", host, distro)
	if !slices.ContainsFunc(mountinfo(t, os.Getpid()), func(m mounts.MountInfo) bool { return m.Point == filepath.Join(moved, bindID("/home/user/c")) }) {
		t.Fatal("the bind in the moved folder was taken down through the symlink")
	}
}

// Two hundred \\wsl$ creates leave ddinit's and the bind service's
// descriptors where they were.
func TestWSLPathsLeakNothing(t *testing.T) {
	harness.RequireEnvironment(t)
	w := newWSLWorld(t)
	ubuntu := newUserDistro(t, "Ubuntu")
	ubuntu.sh(`mkdir -p /home/user/p`)
	_, proxyPID := ubuntu.runProxy(visibleBinary(t, w.shared), w.shared, true, "--bind-grace", "2s")
	create := func() {
		// No such image: the source is translated, then the engine says
		// 404. One connection per request, closed: what is left open is
		// ddinit's.
		code, body := harness.APIOver(t, w.in.Sock, http.MethodPost, "/containers/create", map[string]any{"Image": "no-such-image:here", "HostConfig": map[string]any{"Binds": []string{`\\wsl$\Ubuntu\home\user\p:/p`}}})
		if code != http.StatusNotFound {
			t.Fatalf("create: %d %s", code, body)
		}
	}
	fds := func(pid int) int {
		entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(entries)
	}
	create()
	time.Sleep(200 * time.Millisecond)
	ddinitRun := w.in.Pid()
	before, beforeProxy := fds(ddinitRun), fds(proxyPID)
	for range 200 {
		create()
	}
	time.Sleep(500 * time.Millisecond)
	after, afterProxy := fds(ddinitRun), fds(proxyPID)
	t.Logf("descriptors: ddinit run %d → %d, the distro's proxy %d → %d", before, after, beforeProxy, afterProxy)
	if after > before+2 || afterProxy > beforeProxy+2 {
		t.Fatalf("200 \\\\wsl$ creates: ddinit run %d → %d descriptors, the bind service %d → %d", before, after, beforeProxy, afterProxy)
	}
}

// WSL restarts: the shared tmpfs is empty again, the distro's proxy starts
// while the engine is still down, the engine comes back later. A container
// made in the distro and one made from Windows (\\wsl$), both with a restart
// policy, come back on their binds, never on empty folders; a create that
// passed both proxies keeps both its binds past the sweeps.
func TestBindsComeBackAfterWSLRestarts(t *testing.T) {
	harness.RequireEnvironment(t)
	w := newWSLWorld(t)
	ubuntu := newUserDistro(t, "Ubuntu")
	ubuntu.sh(`mkdir -p /home/user/project /home/user/other && echo hello > /home/user/project/hello.txt && echo other > /home/user/other/other.txt`)
	stopProxy := ubuntu.startProxy(w.shared, "--bind-grace", "2s")
	script := `if [ -e /src/hello.txt ]; then echo sees-files; else echo EMPTY; fi; exec sleep 3600`
	ubuntu.sh(`docker run -d --restart always --name mine -v /home/user/project:/src busybox:local sh -c '` + script + `'`)
	code, body := w.in.API(http.MethodPost, "/containers/create?name=fromwindows", map[string]any{"Image": "busybox:local", "Cmd": []string{"sh", "-c", script},
		"HostConfig": map[string]any{"Binds": []string{`\\wsl$\Ubuntu\home\user\project:/src`}, "RestartPolicy": map[string]any{"Name": "always"}}})
	if code != http.StatusCreated {
		t.Fatalf("create from Windows: %d %s", code, body)
	}
	w.in.Docker("start", "fromwindows")

	// Through the distro's socket, then the shared one: each rewrites one
	// source.
	distroSock := fmt.Sprintf("/proc/%d/root/run/docker.sock", ubuntu.pid)
	code, body = harness.APIOver(t, distroSock, http.MethodPost, "/containers/create?name=both", map[string]any{"Image": "busybox:local", "Cmd": []string{"sleep", "3600"},
		"HostConfig": map[string]any{"Binds": []string{"/home/user/project:/a", `\\wsl$\Ubuntu\home\user\other:/b`}}})
	if code != http.StatusCreated {
		t.Fatalf("create through both proxies: %d %s", code, body)
	}
	w.in.Docker("start", "both")
	time.Sleep(7 * time.Second) // the grace three times over: several sweeps
	if out, err := w.in.DockerErr("exec", "both", "cat", "/a/hello.txt", "/b/other.txt"); err != nil || out != "hello\nother\n" {
		t.Fatalf("the binds of a create that passed both proxies, after the sweeps: %v %q", err, out)
	}
	w.in.Docker("rm", "-f", "both")

	// WSL restarts.
	stopProxy()
	if code, _ := w.in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, m := range bindsLeft(t, w.shared) {
		unix.Unmount(strings.Fields(m)[0], unix.MNT_DETACH)
	}
	entries, _ := os.ReadDir(w.shared)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(w.shared, e.Name()))
	}
	// The proxy first (from ddinit's own binary: the copy in the shared
	// tmpfs went with it), the engine a moment later.
	ubuntu.runProxy(visibleBinary(t, w.shared), w.shared, false, "--bind-grace", "2s")
	time.Sleep(time.Second)
	w.boot()
	for _, name := range []string{"mine", "fromwindows"} {
		within(t, 30*time.Second, name+" started again on its binds", func() bool {
			logs, _ := w.in.DockerErr("logs", name)
			return strings.Count(logs, "sees-files") == 2
		})
		if logs, _ := w.in.DockerErr("logs", name); strings.Contains(logs, "EMPTY") {
			t.Fatalf("%s ran on an empty folder: %q", name, logs)
		}
	}
	w.in.Docker("rm", "-f", "mine", "fromwindows")
	within(t, 10*time.Second, "no binds left", func() bool { return len(bindsLeft(t, w.shared)) == 0 })
}

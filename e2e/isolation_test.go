package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// distroMarker puts a file on the distro's root file system, at its root,
// that nothing inside the namespace may reach.
func distroMarker(t *testing.T) string {
	t.Helper()
	path := fmt.Sprintf("/ddinit-isolation-marker-%d", os.Getpid())
	if err := os.WriteFile(path, []byte("the distro's own file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	return path
}

// buildBreakout compiles the chroot break-out program, statically.
func buildBreakout(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "breakout")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/breakout")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the break-out program: %v\n%s", err, b)
	}
	return out
}

type breakoutReport struct {
	Root   []string `json:"root"`
	Marker bool     `json:"marker"`
	Error  string   `json:"error"`
}

func parseBreakout(t *testing.T, from, out string) breakoutReport {
	t.Helper()
	var r breakoutReport
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		t.Fatalf("break-out from %s printed %q: %v", from, out, err)
	}
	if r.Error != "" {
		t.Fatalf("break-out from %s could not run its steps: %s", from, r.Error)
	}
	return r
}

// A container's root is its own: docker cp and exec see the same files,
// exec lands in the image's root, and neither exec nor a chroot walk from
// a default container reaches the distro's files.
func TestContainersAreIsolated(t *testing.T) {
	harness.RequireEnvironment(t)
	marker := distroMarker(t)
	breakout := buildBreakout(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	in.Docker("run", "-d", "--name", "iso", "busybox:local", "sleep", "600")

	local := filepath.Join(t.TempDir(), "copied.txt")
	os.WriteFile(local, []byte("copied in with docker cp\n"), 0o644)
	in.Docker("cp", local, "iso:/copied.txt")
	if out := in.Docker("exec", "iso", "cat", "/copied.txt"); out != "copied in with docker cp\n" {
		t.Fatalf("docker exec cat of a docker-cp'd file: %q", out)
	}
	cmd := exec.Command("docker", "exec", "-i", "iso", "sh", "-c", "cat > /f")
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock)
	cmd.Stdin = strings.NewReader("written through exec -i\n")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker exec -i: %v %s", err, b)
	}
	if out := in.Docker("exec", "iso", "cat", "/f"); out != "written through exec -i\n" {
		t.Fatalf("read back through exec: %q", out)
	}
	root := strings.Fields(in.Docker("exec", "iso", "ls", "-a", "/"))
	if !slices.Contains(root, "bin") || !slices.Contains(root, "copied.txt") || slices.Contains(root, "usr") {
		t.Fatalf("docker exec ls / does not show the image's root: %v", root)
	}
	for _, c := range [][]string{
		{"exec", "iso", "cat", marker},
		{"run", "--rm", "busybox:local", "cat", marker},
	} {
		if out, err := in.DockerErr(c...); err == nil || strings.Contains(out, "the distro's own file") {
			t.Fatalf("docker %s reached the distro's file: %q", strings.Join(c, " "), out)
		}
	}

	// The chroot walk, from exec and from a default docker run.
	in.Docker("cp", breakout, "iso:/breakout")
	fromExec := parseBreakout(t, "docker exec", in.Docker("exec", "iso", "/breakout", marker))
	in.Docker("create", "--name", "bo", "busybox:local", "/breakout", marker)
	in.Docker("cp", breakout, "bo:/breakout")
	fromRun := parseBreakout(t, "docker run", in.Docker("start", "-a", "bo"))
	for name, r := range map[string]breakoutReport{"docker exec": fromExec, "docker run": fromRun} {
		if r.Marker || !slices.Contains(r.Root, "breakout") || !slices.Contains(r.Root, "bin") || slices.Contains(r.Root, "usr") {
			t.Fatalf("the chroot walk from %s got out of the container: reached %v, distro file reachable: %v", name, r.Root, r.Marker)
		}
	}

	checkNamespaceRoot(t, in, marker)
	// dockerd runs on ddinit's own root: the assembled one.
	if out, err := in.CLI("enter", "dockerd", "--", "cat", "/version-pack.json"); err != nil || !strings.Contains(out, "components") {
		t.Fatalf("dockerd's root is not the assembled root: %v %s", err, out)
	}
	if out, err := in.CLI("enter", "dockerd", "--", "cat", marker); err == nil || strings.Contains(out, "the distro's own file") {
		t.Fatalf("dockerd reaches the distro's file: %q", out)
	}

	// ddinit status names dockerd's pid in the distro beside the namespace's.
	st := in.Status()
	var inner int
	for _, s := range st.Services {
		if s.Name == "dockerd" {
			inner = s.PID
		}
	}
	outer := 0
	for _, p := range harness.FindComm(in.PidNS(), "dockerd") {
		outer = p
	}
	out, err := in.CLI("status")
	if err != nil || inner == 0 || outer == 0 {
		t.Fatalf("status: %v %q (dockerd pid %d inside, %d in the distro)", err, out, inner, outer)
	}
	if !regexpLine(out, "dockerd", strconv.Itoa(inner), strconv.Itoa(outer)) {
		t.Errorf("ddinit status does not show dockerd's pids %d (namespace) and %d (distro):\n%s", inner, outer, out)
	}
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// regexpLine reports whether a line of out starts with name and holds
// every one of words as a field.
func regexpLine(out, name string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != name {
			continue
		}
		ok := true
		for _, w := range words {
			ok = ok && slices.Contains(f, w)
		}
		if ok {
			return true
		}
	}
	return false
}

func parseMountinfo(t *testing.T, text string) []mounts.MountInfo {
	t.Helper()
	table, err := mounts.ParseMountinfo(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// fsPath is where a path of the distro lies in its file system: the
// mount root of the mount holding it joined with the rest of the path.
func fsPath(t *testing.T, distro []mounts.MountInfo, path string) (dev, root string) {
	t.Helper()
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	best := -1
	for i, m := range distro {
		if (path == m.Point || strings.HasPrefix(path, strings.TrimSuffix(m.Point, "/")+"/")) && (best < 0 || len(m.Point) >= len(distro[best].Point)) {
			best = i
		}
	}
	m := distro[best]
	rel, _ := filepath.Rel(m.Point, path)
	return m.Dev, filepath.Join(m.Root, rel)
}

// checkNamespaceRoot: inside PID 1's namespace every mount of the distro's
// root file system is one of ddinit's deliberate binds (checked by device
// and mount root), the distro's file is out of reach, and a process that
// joins the mount namespace starts at the assembled root.
func checkNamespaceRoot(t *testing.T, in *harness.Instance, marker string) {
	t.Helper()
	self, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	distro := parseMountinfo(t, string(self))
	rootDev, _ := fsPath(t, distro, "/")
	// The deliberate binds: the data store's folders, the kernel's modules
	// and the automount root. Each is named by where it comes from in the
	// distro and where it is inside.
	type bind struct{ dev, root, point string }
	var binds []bind
	add := func(src, point string) {
		if _, err := os.Stat(src); err != nil {
			return
		}
		dev, root := fsPath(t, distro, src)
		binds = append(binds, bind{dev, root, point})
	}
	for src, point := range map[string]string{
		"var/lib/docker": "/var/lib/docker", "var/lib/containerd": "/var/lib/containerd",
		"var/lib/kubelet": "/var/lib/kubelet", "var/lib/kubernetes": "/var/lib/kubernetes", "etc/docker": "/etc/docker", "etc/ddinit": "/etc/ddinit", "log": "/var/log/ddinit",
	} {
		add(filepath.Join(in.DataDir, src), point)
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	add(filepath.Join("/lib/modules", release), filepath.Join("/usr/lib/modules", release))

	out, err := in.CLI("enter", "--", "cat", "/proc/1/mountinfo")
	if err != nil {
		t.Fatalf("ddinit enter -- cat /proc/1/mountinfo: %v %s", err, out)
	}
	inside := parseMountinfo(t, out)
	if len(inside) < 5 {
		t.Fatalf("PID 1's mount table is too short to be real:\n%s", out)
	}
	// Services that run on ddinit's own root (dockerd) get it through a
	// recursive bind of "/" at serviceRoot, which repeats the binds there.
	const serviceRoot = "/run/ddinit/rootfs"
	for _, m := range inside {
		if m.Dev != rootDev {
			continue
		}
		ok := false
		for _, b := range binds {
			if b.dev != m.Dev {
				continue
			}
			rel, err := filepath.Rel(b.root, m.Root)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			if m.Point == filepath.Join(b.point, rel) || m.Point == filepath.Join(serviceRoot, b.point, rel) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("PID 1's namespace mounts the distro's root file system (%s) at %s from %s, which is none of ddinit's binds %+v", m.Dev, m.Point, m.Root, binds)
		}
	}
	if out, err := in.CLI("enter", "--", "cat", marker); err == nil || strings.Contains(out, "the distro's own file") {
		t.Fatalf("ddinit enter reached the distro's file: %q", out)
	}
	// nsenter -m alone starts at the namespace's root mount.
	pid := strconv.Itoa(in.Pid1())
	b, err := exec.Command("nsenter", "-t", pid, "-m", "--", "cat", "/version-pack.json").CombinedOutput()
	if err != nil || !strings.Contains(string(b), "components") {
		t.Fatalf("nsenter -m does not start at the assembled root (no /version-pack.json): %v %s", err, b)
	}
	if b, err := exec.Command("nsenter", "-t", pid, "-m", "--", "cat", marker).CombinedOutput(); err == nil {
		t.Fatalf("nsenter -m reached the distro's file: %s", b)
	}
}

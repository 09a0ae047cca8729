package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// The distro's proxy is killed (-9: it takes nothing down), containers
// whose binds it made are removed meanwhile — one bound a folder, one a
// file, one made from Windows with a \\wsl$ path — and the proxy is
// started again: within 5 s their binds are gone from the distro's mount
// table. The bind of a container that still exists stays, works, and goes
// with its container; another distro's bind, and an entry of the distro's
// folder that is not a bind, stay. While a proxy runs, a second one for
// the same distro is refused and takes nothing down, not even a bind
// handed out for a create not made yet.
func TestBindsLeftByAKilledProxyAreTakenDown(t *testing.T) {
	harness.RequireEnvironment(t)
	w := newWSLWorld(t)
	ubuntu := newUserDistro(t, "Ubuntu")
	ubuntu.sh(`mkdir -p /home/user/gone /home/user/kept /home/user/win /home/user/handed && echo gone > /home/user/gone/f && echo kept > /home/user/kept/f && echo file > /home/user/gone.txt && echo win > /home/user/win/f`)
	bin := visibleBinary(t, w.shared)
	_, pid := ubuntu.runProxy(bin, w.shared, true)

	ubuntu.sh(`docker create --name gone -v /home/user/gone:/g busybox:local true && docker create --name gonefile --mount type=bind,src=/home/user/gone.txt,dst=/g.txt busybox:local true && docker run -d --name kept -v /home/user/kept:/k busybox:local sleep 3600`)
	if code, body := w.in.API(http.MethodPost, "/containers/create?name=win", map[string]any{"Image": "busybox:local", "Cmd": []string{"true"},
		"HostConfig": map[string]any{"Binds": []string{`\\wsl$\Ubuntu\home\user\win:/w`}}}); code != http.StatusCreated {
		t.Fatalf("create from Windows: %d %s", code, body)
	}
	folder := filepath.Join(w.shared, "docker-desktop-bind-mounts", "Ubuntu")
	point := func(source string) string { return filepath.Join(folder, bindID(source)) }
	gone := []string{point("/home/user/gone"), point("/home/user/gone.txt"), point("/home/user/win")}
	kept := point("/home/user/kept")
	// Another distro's bind, of a source with the same path, and an entry
	// of the distro's folder that is not a bind.
	debian := filepath.Join(w.shared, "docker-desktop-bind-mounts", "Debian", bindID("/home/user/gone"))
	os.MkdirAll(debian, 0o755)
	if err := unix.Mount("tmpfs", debian, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(debian, unix.MNT_DETACH) })
	notes := filepath.Join(folder, "notes.txt")
	if err := os.WriteFile(notes, []byte("not a bind"), 0o644); err != nil {
		t.Fatal(err)
	}

	mountedIn := func(pid int) []string {
		var points []string
		for _, m := range mountinfo(t, pid) {
			points = append(points, m.Point)
		}
		return points
	}
	for _, p := range append(gone, kept) {
		if !slices.Contains(mountedIn(ubuntu.pid), p) {
			t.Fatalf("%s is not in the distro's mount table before the kill", p)
		}
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "the proxy gone", func() bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(st), ") Z ")
	})
	w.in.Docker("rm", "gone", "gonefile", "win")
	for _, p := range gone {
		if !slices.Contains(mountedIn(ubuntu.pid), p) {
			t.Fatalf("%s left the distro's mount table with no proxy running", p)
		}
	}

	started := time.Now()
	ubuntu.runProxy(bin, w.shared, true)
	for time.Since(started) < 5*time.Second && slices.ContainsFunc(gone, func(p string) bool { return slices.Contains(mountedIn(ubuntu.pid), p) }) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the leftover binds were looked at %s after the proxy started again", time.Since(started).Round(time.Millisecond))
	table := mountedIn(ubuntu.pid)
	for _, p := range gone {
		if slices.Contains(table, p) {
			t.Errorf("%s, whose container was removed while the proxy was down, is still in the distro's mount table %s after the proxy started again", p, time.Since(started).Round(time.Millisecond))
		}
		if exists(p) {
			t.Errorf("the point %s is still there", p)
		}
	}
	if !slices.Contains(table, kept) {
		t.Fatalf("the bind of the container that exists was taken down")
	}
	if out := w.in.Docker("exec", "kept", "cat", "/k/f"); out != "kept\n" {
		t.Fatalf("the container that exists reads its bind: %q", out)
	}
	if !slices.Contains(mountedIn(os.Getpid()), debian) {
		t.Fatal("another distro's bind was taken down")
	}
	if b, err := os.ReadFile(notes); err != nil || string(b) != "not a bind" {
		t.Fatalf("an entry of the folder that is not a bind: %q %v", b, err)
	}

	// A second proxy for the distro is refused, and takes nothing down.
	handed := handOut(t, w.shared, "Ubuntu", "/home/user/handed")
	out, err := ubuntu.command(bin, "proxy", "--distro", "Ubuntu", "--wsl-shared", w.shared, "--socket", "/run/second.sock").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another ddinit proxy serves the distro") {
		t.Fatalf("a second proxy for the distro: %v\n%s", err, out)
	}
	for _, p := range []string{kept, filepath.Join(folder, filepath.Base(handed))} {
		if !slices.Contains(mountedIn(ubuntu.pid), p) {
			t.Fatalf("%s was taken down by a second proxy", p)
		}
	}

	// The bind kept is tracked: it goes with its container.
	w.in.Docker("rm", "-f", "kept")
	within(t, 5*time.Second, "the bind kept gone with its container", func() bool { return !slices.Contains(mountedIn(ubuntu.pid), kept) })
}

// handOut asks the distro's bind service for a bind of path, as ddinit
// does for a create from Windows, and returns where the engine sees it.
func handOut(t *testing.T, shared, distro, path string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(shared, "docker-desktop", "proxies", distro+".sock"))
		},
	}}
	body, _ := json.Marshal(map[string]any{"path": path, "create": true})
	resp, err := c.Post("http://bind/binds", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a struct{ Source, Message string }
	json.NewDecoder(resp.Body).Decode(&a)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(a.Source, mounts.DistroBindsTarget+"/"+distro+"/") {
		t.Fatalf("the bind service for %s: %s %+v", path, resp.Status, a)
	}
	return a.Source
}

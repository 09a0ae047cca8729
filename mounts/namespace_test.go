package mounts

import (
	"github.com/ddinit/ddinit/internal/testutil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The plan mounts what contains before what it contains, the namespace's
// own file systems before the binds from the distro, and every bind from
// the distro is marked so.
func TestPlanOrder(t *testing.T) {
	ds := &DataStore{Dir: "/data"}
	plan := Plan(ds, "/mnt/host", "/mnt/wsl/docker-desktop-bind-mounts", "/usr/lib/wsl")
	index := map[string]int{}
	for i, m := range plan {
		if _, dup := index[m.Target]; dup {
			t.Fatalf("%s is mounted twice", m.Target)
		}
		index[m.Target] = i
		for j := range i {
			if strings.HasPrefix(plan[j].Target, m.Target+"/") {
				t.Errorf("%s is mounted after %s, which it would hide", m.Target, plan[j].Target)
			}
		}
		bind := m.Flags&unix.MS_BIND != 0
		fromData := strings.HasPrefix(m.Source, "/data/")
		if fromData && !m.FromDistro || m.FromDistro && !bind {
			t.Errorf("%s: FromDistro %v for a bind of %s", m.Target, m.FromDistro, m.Source)
		}
	}
	for _, p := range [][2]string{{"/proc", "/sys"}, {"/sys", "/sys/fs/cgroup"}, {"/dev", "/dev/pts"}, {"/dev", "/dev/shm"}, {"/run", DrivesTarget}, {"/tmp", "/var/lib/docker"}} {
		if index[p[0]] >= index[p[1]] {
			t.Errorf("%s comes after %s", p[0], p[1])
		}
	}
	if !slices.ContainsFunc(plan, func(m Mount) bool { return m.Target == DrivesTarget && m.Slave && m.Optional }) {
		t.Error("the drives are not an optional slave bind")
	}
	if !slices.ContainsFunc(plan, func(m Mount) bool { return m.Target == DistroBindsTarget && m.ReadOnly && m.Slave }) {
		t.Error("the distros' binds are not a read-only slave bind")
	}
	if !slices.ContainsFunc(plan, func(m Mount) bool { return m.Target == WSLLibTarget && m.ReadOnly && m.Optional }) {
		t.Error("WSL's GPU libraries are not an optional read-only bind")
	}
}

// MountAll makes the plan's mounts under a root, skips optional ones whose
// source is missing, stops at the first failure with what it made, and
// Unmount takes them all down again, last first.
func TestMountAllAndUnmount(t *testing.T) {
	testutil.RequiresRoot(t)
	root, src := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	plan := []Mount{
		{Name: "a tmpfs", Source: "tmpfs", Target: "/run", FSType: "tmpfs"},
		{Name: "a bind", Source: src, Target: "/run/in", Flags: bindRec, FromDistro: true, ReadOnly: true},
		{Name: "missing", Source: filepath.Join(src, "nope"), Target: "/opt", Flags: bindRec, Optional: true},
	}
	done, err := MountAll(plan, root)
	if err != nil || len(done) != 2 {
		t.Fatalf("mounted %d: %v", len(done), err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "run/in/f")); err != nil || string(b) != "x" {
		t.Fatalf("the bind: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(root, "run/in/g"), nil, 0o644); err == nil {
		t.Fatal("a read-only bind took a write")
	}
	failing := append(plan[:1:1], Mount{Name: "bad", Source: filepath.Join(src, "nope"), Target: "/x", Flags: bindRec})
	root2 := t.TempDir()
	done2, err := MountAll(failing, root2)
	if err == nil || !strings.Contains(err.Error(), "bad") || len(done2) != 1 {
		t.Fatalf("a failing mount: %d made, %v", len(done2), err)
	}
	if err := Unmount(done, root); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(done2, root2); err != nil {
		t.Fatal(err)
	}
	table, _ := ReadMountinfo("/proc/self/mountinfo")
	for _, m := range table {
		if strings.HasPrefix(m.Point, root) || strings.HasPrefix(m.Point, root2) {
			t.Fatalf("left mounted: %s", m.Point)
		}
	}
}

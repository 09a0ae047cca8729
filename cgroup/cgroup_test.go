package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeV1 lays out a v1 hierarchy's files: a directory per controller with
// its cgroup.procs, and a symlink alias as v1 mounts have (cpu -> cpu,cpuacct).
func fakeV1(t *testing.T) Hierarchy {
	root := t.TempDir()
	for _, c := range []string{"cpu,cpuacct", "memory", "freezer", "systemd"} {
		os.MkdirAll(filepath.Join(root, c), 0o755)
		os.WriteFile(filepath.Join(root, c, "cgroup.procs"), nil, 0o644)
	}
	os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu"))
	return Hierarchy{Root: root}
}

// A process is placed in every real hierarchy, once each (not through an
// alias), and nowhere outside the path given.
func TestPlaceInEveryHierarchy(t *testing.T) {
	h := fakeV1(t)
	if err := h.Place("/ddinit/containerd", 4242); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpu,cpuacct", "memory", "freezer", "systemd"} {
		b, err := os.ReadFile(filepath.Join(h.Root, c, "ddinit/containerd/cgroup.procs"))
		if err != nil || string(b) != "4242" {
			t.Fatalf("%s: %q %v", c, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(h.Root, "cpu", "ddinit")); err == nil {
		if fi, _ := os.Lstat(filepath.Join(h.Root, "cpu")); fi.Mode()&os.ModeSymlink == 0 {
			t.Fatal("the alias was treated as a hierarchy of its own")
		}
	}
	for _, bad := range []string{"ddinit", "/ddinit/../../etc"} {
		if err := h.Place(bad, 1); err == nil {
			t.Fatalf("placed into %q", bad)
		}
	}
	v2 := Hierarchy{Root: t.TempDir(), V2: true}
	if err := v2.Place("/ddinit/containerd", 7); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(v2.Root, "ddinit/containerd/cgroup.procs")); string(b) != "7" {
		t.Fatalf("v2: %q", b)
	}
}

// On v1 the cgroups without processes are emptied; one with processes is
// left as it is, and the answer says so.
func TestReclaimV1EmptiesOnlyIdleCgroups(t *testing.T) {
	h := fakeV1(t)
	h.Place("/ddinit/containerd", 1)
	os.MkdirAll(filepath.Join(h.Root, "memory/ddinit/dockerd"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "memory/ddinit/cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(h.Root, "memory/ddinit/dockerd/cgroup.procs"), nil, 0o644)
	did, err := h.Reclaim("/ddinit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.Root, "memory/ddinit/dockerd/memory.force_empty")); err != nil {
		t.Fatal("the empty cgroup was not emptied")
	}
	if _, err := os.Stat(filepath.Join(h.Root, "memory/ddinit/containerd/memory.force_empty")); err == nil {
		t.Fatal("a cgroup with a process was emptied")
	}
	if !strings.Contains(did, "cgroup v1") || !strings.Contains(did, "1 with processes") {
		t.Fatalf("said: %s", did)
	}
	h.Remove("/ddinit/containerd")
}

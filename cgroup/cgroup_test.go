package cgroup

import (
	"context"
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
	did, err := h.Reclaim(context.Background(), "/ddinit")
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

// On v2 the page cache is asked back, at most half of what is left at a
// time (a regular file stands in for memory.reclaim), and when nothing
// more comes back (the stand-in's memory.stat does not change) no more is
// asked; the answer says how much there was.
func TestReclaimV2AsksForThePageCacheInChunks(t *testing.T) {
	h := Hierarchy{Root: t.TempDir(), V2: true}
	dir := filepath.Join(h.Root, "ddinit")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "memory.stat"), []byte("anon 4096\nfile 150000000\nkernel 8192\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "memory.reclaim"), nil, 0o644)
	did, err := h.Reclaim(context.Background(), "/ddinit")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "memory.reclaim")); string(b) != "67108864" {
		t.Fatalf("the request: %q (want 64 MiB: half of what is left, at most 64 MiB)", b)
	}
	if !strings.Contains(did, "page cache 150000000 bytes before") {
		t.Fatalf("said: %s", did)
	}
	if _, err := (Hierarchy{Root: t.TempDir(), V2: true}).Reclaim(context.Background(), "/ddinit"); err == nil {
		t.Fatal("no error for a cgroup without memory.stat")
	}
}

// A v1 cpuset cgroup starts with no CPUs or memory nodes, and nothing can
// join it until it has them: each new level gets its parent's.
func TestPlaceGivesNewCpusetsTheirParents(t *testing.T) {
	h := fakeV1(t)
	os.MkdirAll(filepath.Join(h.Root, "cpuset"), 0o755)
	os.WriteFile(filepath.Join(h.Root, "cpuset", "cgroup.procs"), nil, 0o644)
	os.WriteFile(filepath.Join(h.Root, "cpuset", "cpuset.cpus"), []byte("0-1\n"), 0o644)
	os.WriteFile(filepath.Join(h.Root, "cpuset", "cpuset.mems"), []byte("0\n"), 0o644)
	// As the kernel makes them: a new cgroup's files exist and are empty.
	for _, d := range []string{"cpuset/ddinit", "cpuset/ddinit/containerd"} {
		os.MkdirAll(filepath.Join(h.Root, d), 0o755)
		os.WriteFile(filepath.Join(h.Root, d, "cpuset.cpus"), nil, 0o644)
		os.WriteFile(filepath.Join(h.Root, d, "cpuset.mems"), nil, 0o644)
	}
	if err := h.Place("/ddinit/containerd", 42); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"cpuset/ddinit", "cpuset/ddinit/containerd"} {
		cpus, _ := os.ReadFile(filepath.Join(h.Root, d, "cpuset.cpus"))
		mems, _ := os.ReadFile(filepath.Join(h.Root, d, "cpuset.mems"))
		if string(cpus) != "0-1\n" || string(mems) != "0\n" {
			t.Fatalf("%s: cpus %q mems %q", d, cpus, mems)
		}
	}
}

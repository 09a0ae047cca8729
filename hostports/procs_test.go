package hostports

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ddinit/ddinit/cgroup"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A container's processes are those of its main process's cgroup (and
// below), read in the distro's hierarchy: v2 the unified line, v1 one
// controller's; never the root cgroup's.
func TestCgroupProcs(t *testing.T) {
	const id = "/ddinit/docker/c0ffee"
	procRoot := t.TempDir()
	write(t, filepath.Join(procRoot, "7", "cgroup"), "0::"+id+"\n")
	write(t, filepath.Join(procRoot, "8", "cgroup"),
		"9:name=systemd:/\n8:pids:"+id+"\n4:memory:"+id+"\n2:cpu,cpuacct:"+id+"\n0::/\n")
	write(t, filepath.Join(procRoot, "9", "cgroup"), "0::/\n")

	v2 := t.TempDir()
	write(t, filepath.Join(v2, id, "cgroup.procs"), "101\n102\n")
	write(t, filepath.Join(v2, id, "init.scope", "cgroup.procs"), "103\n") // a container's own cgroups below
	write(t, filepath.Join(v2, "ddinit", "docker", "cgroup.procs"), "1\n") // dockerd's, above: not
	got, err := cgroupProcs(cgroup.Hierarchy{Root: v2, V2: true}, procRoot, 7)
	if slices.Sort(got); err != nil || !slices.Equal(got, []int{101, 102, 103}) {
		t.Errorf("v2: %v %v", got, err)
	}

	v1 := t.TempDir()
	write(t, filepath.Join(v1, "pids", id, "cgroup.procs"), "201\n")
	write(t, filepath.Join(v1, "memory", id, "cgroup.procs"), "201\n")
	write(t, filepath.Join(v1, "systemd", "cgroup.procs"), "1\n2\n")
	got, err = cgroupProcs(cgroup.Hierarchy{Root: v1}, procRoot, 8)
	if err != nil || !slices.Equal(got, []int{201}) {
		t.Errorf("v1: %v %v", got, err)
	}

	for _, c := range []struct {
		name string
		h    cgroup.Hierarchy
		pid  int
	}{{"the root cgroup", cgroup.Hierarchy{Root: v2, V2: true}, 9}, {"no such process", cgroup.Hierarchy{Root: v2, V2: true}, 10}, {"no process", cgroup.Hierarchy{Root: v2, V2: true}, 0}} {
		if got, err := cgroupProcs(c.h, procRoot, c.pid); err == nil {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

// The inodes read from a process's fds are those of its sockets, as the
// kernel's dump names them.
func TestSocketInodes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := map[uint32]bool{}
	socketInodes("/proc", []int{os.Getpid(), 1 << 30}, got) // the second is no process
	if ino := inode(t, l.(*net.TCPListener)); !got[ino] {
		t.Fatalf("socket %d not among %v", ino, got)
	}
	for _, c := range []struct {
		link string
		ino  uint32
		ok   bool
	}{{"socket:[12345]", 12345, true}, {"socket:[4294967295]", 1<<32 - 1, true}, {"socket:[4294967296]", 0, false},
		{"pipe:[12]", 0, false}, {"socket:[12", 0, false}, {"/dev/null", 0, false}, {"socket:[]", 0, false}} {
		if ino, ok := socketInode(c.link); ok != c.ok || ok && ino != c.ino {
			t.Errorf("%q: %d %v", c.link, ino, ok)
		}
	}
}

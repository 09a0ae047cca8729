package services

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Under crun a service on ddinit's root gets an rshared bind of each
// outermost shared mount of the namespace, and none of /, /proc, /sys,
// /dev, its own root, a private mount, or a mount under one bound.
func TestSharedBinds(t *testing.T) {
	info := `20 1 0:20 / / rw shared:1 - overlay overlay rw
21 20 0:21 / /proc rw shared:2 - proc proc rw
22 20 0:22 / /sys rw shared:3 - sysfs sysfs rw
23 22 0:23 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw
24 20 0:24 / /dev rw shared:5 - tmpfs tmpfs rw
25 20 0:25 / /run rw shared:6 - tmpfs tmpfs rw
26 25 0:26 / /run/desktop/mnt/host rw shared:7 - 9p drvfs rw
27 20 8:1 /data/var/lib/docker /var/lib/docker rw shared:8 - ext4 /dev/sdb rw
28 20 8:1 /data/var/lib/kubelet /var/lib/kubelet rw shared:9 - ext4 /dev/sdb rw
29 20 0:27 / /tmp rw - tmpfs tmpfs rw
30 25 0:20 / /run/ddinit/rootfs rw shared:1 - overlay overlay rw
31 20 8:1 /data/etc/docker /etc/docker rw shared:10 - ext4 /dev/sdb rw
`
	path := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(path, []byte(info), 0o644)
	binds, err := sharedBinds(path, "/run/ddinit/rootfs")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range binds {
		if b.Source != b.Destination || b.Type != "bind" || !slices.Equal(b.Options, []string{"rbind", "rshared"}) {
			t.Fatalf("a bind not of a mount at its own place, rshared: %+v", b)
		}
		got = append(got, b.Destination)
	}
	if want := []string{"/etc/docker", "/run", "/var/lib/docker", "/var/lib/kubelet"}; !slices.Equal(got, want) {
		t.Fatalf("binds %v, want %v", got, want)
	}
}

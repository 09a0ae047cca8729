package services

import (
	"strings"
	"testing"
)

// containerd 1.x reads config version 2; 2.x reads 3 without migrating it
// at each start, and names CRI's plugins otherwise: each gets its own.
func TestContainerdConfigForEachMajor(t *testing.T) {
	for v, want := range map[string]int{"1.6.20~ds1-1+b1": 1, "2.4.2": 2, "v2.4.2": 2, "1:1.7.24": 1, "": 1, "garbage": 1} {
		if got := ContainerdMajor(v); got != want {
			t.Errorf("ContainerdMajor(%q) = %d, want %d", v, got, want)
		}
	}
	one := ContainerdConfig("/r", "/s", "/a.sock", 1)
	two := ContainerdConfig("/r", "/s", "/a.sock", 2)
	if !strings.HasPrefix(one, "version = 2\n") || !strings.Contains(one, `"io.containerd.grpc.v1.cri"`) {
		t.Errorf("1.x:\n%s", one)
	}
	if !strings.HasPrefix(two, "version = 3\n") || !strings.Contains(two, `"io.containerd.cri.v1.runtime"`) || !strings.Contains(two, `address = "/a.sock.ttrpc"`) {
		t.Errorf("2.x:\n%s", two)
	}
}

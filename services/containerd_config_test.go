package services

import (
	"strings"
	"testing"
)

// Each containerd gets the format it reads as its own (an older one, 2.4
// migrates at every start with a warning), and CRI's plugins by the names
// that format gives them.
func TestContainerdConfigForEachVersion(t *testing.T) {
	for v, want := range map[string]int{"1.6.20~ds1-1+b1": 2, "2.4.2": 4, "v2.4.2": 4, "2.3.7": 3, "2.0.0": 3, "2": 3, "2.10.1": 4, "3.0.0": 4, "1:1.7.24": 2, "": 2, "garbage": 2, "0.9": 2} {
		if got := ContainerdConfigVersion(v); got != want {
			t.Errorf("ContainerdConfigVersion(%q) = %d, want %d", v, got, want)
		}
	}
	for version, want := range map[int]string{0: "version = 2\n", 2: "version = 2\n", 3: "version = 3\n", 4: "version = 4\n"} {
		conf := ContainerdConfig("/r", "/s", "/a.sock", version, nil)
		if !strings.HasPrefix(conf, want) || !strings.Contains(conf, `address = "/a.sock"`) || !strings.Contains(conf, `address = "/a.sock.ttrpc"`) {
			t.Errorf("%d:\n%s", version, conf)
		}
		cri := `"io.containerd.grpc.v1.cri"`
		if version >= 3 {
			cri = `"io.containerd.cri.v1.runtime"`
		}
		if !strings.Contains(conf, cri) {
			t.Errorf("%d: CRI not off:\n%s", version, conf)
		}
	}
}

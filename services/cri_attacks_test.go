package services

import (
	"regexp"
	"strings"
	"testing"
)

// Version strings and the format each containerd reads.
func TestConfigVersions(t *testing.T) {
	for v, want := range map[string]int{"v2.4.0-rc.1": 4, "2.4": 4, "1.7.24": 2, "2.1.1~ds1-1": 3, "1:2.4.2-1": 4, "v2.4.2": 4, "1.6.20~ds1-1+deb12u3": 2, "": 2, "2.10.0": 4, "3.0.0": 4, "2.0.7": 3} {
		if got := ContainerdConfigVersion(v); got != want {
			t.Errorf("%q: %d, want %d", v, got, want)
		}
	}
}

// containerd 2.0 reads version 3 but has no cni.bin_dirs (added in 2.1,
// containerd#11311; 2.0.7's CniConfig has only bin_dir): the folder must
// be named in a key 2.0 reads, or pods get the default /opt/cni/bin.
func TestCRIOn20NamesCNIBinDir(t *testing.T) {
	conf := ContainerdConfig("/r", "/s", "/a.sock", ContainerdConfigVersion("2.0.7"),
		&CRI{SandboxImage: "p", RuntimeBinary: "runc", CNIBinDirs: []string{"/usr/lib/cni"}, CNIConfDir: "/etc/cni/net.d"})
	if !strings.Contains(conf, `bin_dir = "/usr/lib/cni"`) {
		t.Errorf("containerd 2.0 would not read the CNI folder:\n%s", conf)
	}
}

// ContainerdConfig's strings are TOML basic strings: only TOML 1.0's
// escapes (\b \t \n \f \r \" \\ \uXXXX), and valid UTF-8. Go's %q would
// write \a, \v and \xNN, which 1.6 refuses ("invalid escape sequence") and
// 2.4 refuses (\a, \v) or reads as another character (\xff as U+00FF).
func TestTOMLQuoting(t *testing.T) {
	bad := regexp.MustCompile(`\\[avx]`)
	for _, s := range []string{"a\x00b", "a\ab", "a\vb", "a\x1bb", "a\x7fb", "a\xffb"} {
		conf := ContainerdConfig("/r"+s, "/s", "/a.sock", 4, &CRI{SandboxImage: "img" + s, RuntimeBinary: "runc", CNIBinDirs: []string{"/c"}, CNIConfDir: "/d"})
		if m := bad.FindAllString(conf, -1); m != nil {
			t.Errorf("%q: escapes TOML does not have: %v", s, m)
		}
	}
}

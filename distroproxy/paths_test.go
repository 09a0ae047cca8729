package distroproxy

import "testing"

func TestParseWSLPath(t *testing.T) {
	for src, want := range map[string][2]string{
		`\\wsl$\Ubuntu\home\me\src`:          {"Ubuntu", "/home/me/src"},
		`\\wsl.localhost\Alpine\tmp`:         {"Alpine", "/tmp"},
		`//wsl$/Debian/home/me`:              {"Debian", "/home/me"},
		`\\WSL$\Ubuntu\`:                     {"Ubuntu", "/"},
		`\\wsl.localhost\Ubuntu-22.04\a b é`: {"Ubuntu-22.04", "/a b é"},
	} {
		d, p, ok := parseWSLPath(src)
		if !ok || d != want[0] || p != want[1] {
			t.Errorf("%s: %q %q %v, want %v", src, d, p, ok, want)
		}
	}
	for _, src := range []string{`C:\x`, `/home/me`, `\\wsl$\`, `\\wsl$\..\x`, `\\server\share\x`, `named`} {
		if d, p, ok := parseWSLPath(src); ok {
			t.Errorf("%s is not a WSL path: %q %q", src, d, p)
		}
	}
}

func TestOwnIDOnlyNamesThisDistrosBinds(t *testing.T) {
	b := &Binds{Distro: "Ubuntu"}
	if b.ownID(EngineBinds+"/Ubuntu/0123abcd") != "0123abcd" {
		t.Error("its own bind")
	}
	for _, p := range []string{EngineBinds + "/Debian/0123abcd", EngineBinds + "/Ubuntu/x/y", "/run/desktop/mnt/host/c/x", EngineBinds + "/Ubuntu"} {
		if id := b.ownID(p); id != "" {
			t.Errorf("%s: %q", p, id)
		}
	}
}

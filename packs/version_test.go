package packs

import (
	"errors"
	"strings"
	"testing"
)

// Every spelling a package or a build gives dockerd's version is read as
// its upstream release; anything else is unreadable, never "not older".
func TestCompareEngines(t *testing.T) {
	const unreadable = 2 // in want: either cannot be read
	for _, c := range []struct {
		a, b string
		want int
	}{
		// Plain releases; a missing field is 0.
		{"20.10.24", "20.10.25", -1},
		{"20.10.25", "20.10.24", 1},
		{"24.0.5", "20.10.24", 1},
		{"20.10", "20.10.1", -1},
		{"20.10", "20.10.0", 0},
		{"17.03.0", "17.3", 0},
		{"20.10.24", "20.10.24", 0},
		// A leading v (a git tag).
		{"v20.10.24", "20.10.24", 0},
		{"v20.10.24", "v20.10.25", -1},
		// Debian and Ubuntu: repacks, revisions, stable updates, epochs.
		{"20.10.24+dfsg1-1+deb12u1+b6", "20.10.25", -1},
		{"20.10.25", "20.10.24+dfsg1", 1},
		{"20.10.24", "20.10.24+dfsg1", 0},
		{"20.10.24+dfsg1-1+deb12u1+b6", "20.10.24+dfsg1-1", 0},
		{"24.0.5-0ubuntu1~22.04.1", "24.0.5", 0},
		{"1.6.20~ds1-1+deb12u3", "1.6.20", 0},
		{"20.10.24~dfsg1-1", "20.10.24", 0},
		{"1:20.10.24", "20.10.25", -1}, // the epoch orders packages, not engines
		{"5:20.10.24~3-0~debian-bookworm", "20.10.24", 0},
		{"5:24.0.7-1~debian.12~bookworm", "20.10.24+dfsg1", 1},
		// Docker CE/EE: -ce, ~ce (deb), .ce (rpm).
		{"18.06.1-ce", "18.06.1", 0},
		{"17.03.0~ce-0~ubuntu-xenial", "17.03.0", 0},
		{"18.06.1~ce~3-0~ubuntu", "18.06.1", 0},
		{"18.06.1.ce-3.el7", "18.06.1", 0},
		{"20.10.24.ce", "20.10.24", 0},
		{"17.06.2-ee-16", "17.06.2", 0},
		{"18.06.1.ce", "18.09.0", -1},
		// Pre-releases come before their release, after the one before.
		{"24.0.0-rc.1", "24.0.0", -1},
		{"24.0.0-rc1", "24.0.0-rc.1", 0},
		{"24.0.0-rc.1", "24.0.0-rc.2", -1},
		{"24.0.0-beta.2", "24.0.0-rc.1", -1},
		{"24.0.0-alpha", "24.0.0-beta", -1},
		{"24.0.0~rc.1-1~debian.12~bookworm", "24.0.0-rc.1", 0},
		{"18.09.1-ce-rc1", "18.09.1", -1},
		{"24.0.0-rc.1", "20.10.24", 1},
		// What cannot be read, on either side.
		{"", "20.10.24", unreadable},
		{"20.10.24", "", unreadable},
		{"unknown", "20.10.24", unreadable},
		{"20", "20.10.24", unreadable},
		{"20.10.x", "20.10.24", unreadable},
		{"20.10.24-dirty", "20.10.24", unreadable},
		{"20.10.24.", "20.10.24", unreadable},
		{" 20.10.24", "20.10.24", unreadable},
		{"20.10.24 ", "20.10.24", unreadable},
		{"V20.10.24", "20.10.24", unreadable},
		{"5:v20.10.24", "20.10.24", unreadable},
		{":20.10.24", "20.10.24", unreadable},
		{"x:20.10.24", "20.10.24", unreadable},
		{"-20.10.24", "20.10.24", unreadable},
		{"20.10.24.rc1", "20.10.24", unreadable},
		{"24.0.0-rc1-rc2", "24.0.0", unreadable},
		{"20.10.24~", "20.10.24", unreadable},
		{"99999999999999999999999.1", "20.10.24", unreadable},
		{"20.10.24", "unknown", unreadable},
	} {
		got, err := CompareEngines(c.a, c.b)
		switch {
		case c.want == unreadable && (err == nil || !errors.Is(err, ErrUnreadableVersion)):
			t.Errorf("CompareEngines(%q, %q) = %d, %v; want unreadable", c.a, c.b, got, err)
		case c.want != unreadable && (err != nil || got != c.want):
			t.Errorf("CompareEngines(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
		}
		if c.want != unreadable {
			// The order is the same both ways round.
			if back, err := CompareEngines(c.b, c.a); err != nil || back != -c.want {
				t.Errorf("CompareEngines(%q, %q) = %d, %v; want %d", c.b, c.a, back, err, -c.want)
			}
		}
	}
}

// A pack may run on a store unless it is older than an engine that ran
// there or either version cannot be read; the error names both.
func TestCheckEngine(t *testing.T) {
	for _, c := range []struct {
		pack  string
		store []string
		// want: "" for nil; else the store version named and whether
		// the refusal is for an unreadable version.
		wantStore  string
		unreadable bool
	}{
		{pack: "20.10.24", store: nil},
		{pack: "", store: nil}, // nothing ran on the store: nothing to protect
		{pack: "20.10.24", store: []string{"20.10.24+dfsg1-1"}},
		{pack: "24.0.5", store: []string{"20.10.24", "23.0.1"}},
		{pack: "20.10.24", store: []string{"24.0.5"}, wantStore: "24.0.5"},
		{pack: "20.10.24", store: []string{"23.0.1", "24.0.5", "21.0.0"}, wantStore: "24.0.5"},
		{pack: "", store: []string{"20.10.24"}, wantStore: "20.10.24", unreadable: true},
		{pack: "v20.10.x", store: []string{"20.10.24"}, wantStore: "20.10.24", unreadable: true},
		{pack: "99.0.0", store: []string{""}, wantStore: "", unreadable: true},
		{pack: "99.0.0", store: []string{"20.10.24", "dev"}, wantStore: "dev", unreadable: true},
		{pack: "dev", store: []string{"dev"}, wantStore: "dev", unreadable: true}, // the same word may be two builds
	} {
		err := CheckEngine(c.pack, c.store...)
		if c.wantStore == "" && !c.unreadable {
			if err != nil {
				t.Errorf("CheckEngine(%q, %q) = %v; want nil", c.pack, c.store, err)
			}
			continue
		}
		var d *DowngradeError
		if !errors.As(err, &d) || d.Pack != c.pack || d.Store != c.wantStore || (d.Unreadable != nil) != c.unreadable {
			t.Errorf("CheckEngine(%q, %q) = %#v; want a refusal against %q (unreadable %v)", c.pack, c.store, err, c.wantStore, c.unreadable)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.pack) || !strings.Contains(msg, c.wantStore) {
			t.Errorf("CheckEngine(%q, %q): %q does not name both versions", c.pack, c.store, msg)
		}
	}
}

package mounts

import (
	"slices"
	"testing"
)

// What a bind of / from a distro takes along: its mounts, each once,
// parents first, without the shared tmpfs, what is below it, or the
// shared tmpfs bound somewhere else.
func TestSubmountsLeaveTheSharedTmpfsOut(t *testing.T) {
	table := []MountInfo{
		{Dev: "0:1", Point: "/"},
		{Dev: "0:2", Point: "/proc"},
		{Dev: "0:3", Point: "/mnt/wsl"}, // the shared tmpfs
		{Dev: "8:1", Point: "/mnt/wsl/docker-desktop-bind-mounts/Debian/abc"},     // another distro's bind
		{Dev: "0:3", Point: "/srv/wsl-again", Root: "/"},                          // the shared tmpfs, bound again
		{Dev: "8:1", Point: "/srv/wsl-again/docker-desktop-bind-mounts/Debian/x"}, // under that view
		{Dev: "0:4", Point: "/home/me/data"},
		{Dev: "0:5", Point: "/home"},
		{Dev: "0:6", Point: "/home"}, // stacked on the one before
		{Dev: "0:7", Point: "/mnt/wslg"},
	}
	got := submounts("/", table, []string{"/mnt/wsl"})
	want := []string{"proc", "home", "mnt/wslg", "home/me/data"}
	if !slices.Equal(got, want) {
		t.Fatalf("submounts of /: %q, want %q", got, want)
	}
	if got := submounts("/home", table, []string{"/mnt/wsl"}); !slices.Equal(got, []string{"me/data"}) {
		t.Fatalf("submounts of /home: %q", got)
	}
	if m, ok := MountOf(table, "/srv/wsl-again/x"); !ok || m.Dev != "0:3" {
		t.Fatalf("the mount of a path in the shared tmpfs's other view: %+v", m)
	}
	if m, ok := MountOf(table, "/home/me"); !ok || m.Dev != "0:6" {
		t.Fatalf("the top of a stack: %+v", m)
	}
}

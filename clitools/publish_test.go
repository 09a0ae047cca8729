package clitools

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/internal/testutil"
	"golang.org/x/sys/unix"
)

// toolsTree is an extracted tools image whose docker prints what.
func toolsTree(t *testing.T, what string) string {
	t.Helper()
	tree := t.TempDir()
	for _, f := range append([]string{dockerBinary}, pluginPaths()...) {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, f)), 0o755)
		os.WriteFile(filepath.Join(tree, f), []byte(what+"\n"), 0o755)
	}
	os.WriteFile(filepath.Join(tree, ManifestFile), []byte(`{"components":[{"name":"docker","version":"`+what+`"}]}`), 0o644)
	if _, err := Check(tree); err != nil {
		t.Fatal(err)
	}
	return tree
}

// The offer, as another distro sees it through its own view of the shared
// tmpfs (a peer): read-only, switched to a new version in one step, the
// old one gone but still readable by what had it open, and all of it gone
// once withdrawn.
func TestPublishSwitchAndWithdraw(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	peer := filepath.Join(t.TempDir(), "peer")
	os.Mkdir(peer, 0o755)
	if err := unix.Mount(shared, peer, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(peer, unix.MNT_DETACH) })
	read := func(view, rel string) string {
		b, _ := os.ReadFile(filepath.Join(view, testFolder, rel))
		return strings.TrimSpace(string(b))
	}

	if err := Publish(shared, testFolder, toolsTree(t, "one"), "aaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	if got := read(peer, "current/bin/docker"); got != "one" {
		t.Fatalf("the peer reads %q", got)
	}
	err := os.WriteFile(filepath.Join(peer, testFolder, "current/bin/docker"), []byte("x"), 0o755)
	if !errors.Is(err, unix.EROFS) {
		t.Fatalf("a write into the offer: %v", err)
	}
	// Published again, the same: nothing stacks.
	if err := Publish(shared, testFolder, toolsTree(t, "one"), "aaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join(peer, testFolder, "current/bin/docker"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	if err := Publish(shared, testFolder, toolsTree(t, "two"), "bbbbbbbbbbbb"); err != nil {
		t.Fatal(err)
	}
	if got := read(peer, "current/bin/docker"); got != "two" {
		t.Fatalf("after the switch the peer reads %q", got)
	}
	// The version current named until the switch stays whole until the
	// next one: a docker that read current just before the rename finds
	// its files.
	if got := read(peer, "aaaaaaaaaaaa/bin/docker"); got != "one" {
		t.Fatalf("the previous version right after the switch: %q", got)
	}
	if err := Publish(shared, testFolder, toolsTree(t, "three"), "cccccccccccc"); err != nil {
		t.Fatal(err)
	}
	if got := read(peer, "current/bin/docker") + read(peer, "bbbbbbbbbbbb/bin/docker"); got != "threetwo" {
		t.Fatalf("after a second switch the peer reads %q", got)
	}
	if _, err := os.Stat(filepath.Join(peer, testFolder, "aaaaaaaaaaaa")); err == nil {
		t.Fatal("the version before the previous one is still there")
	}
	b := make([]byte, 3)
	if _, err := held.ReadAt(b, 0); err != nil || string(b) != "one" {
		t.Fatalf("a file of a version taken down, held open: %q %v", b, err)
	}

	if err := Withdraw(shared, testFolder); err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(filepath.Join(peer, testFolder))
	if len(names) != 0 {
		t.Fatalf("left after the withdrawal: %v", names)
	}
}

// A symlink planted where the tools' folder goes is refused, never
// followed: nothing is mounted through it.
func TestPublishRefusesASymlinkInTheWay(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	elsewhere := t.TempDir()
	os.Symlink(elsewhere, filepath.Join(shared, "docker-desktop"))
	err := Publish(shared, testFolder, toolsTree(t, "one"), "aaaaaaaaaaaa")
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("published through a symlink: %v", err)
	}
	if names, _ := os.ReadDir(elsewhere); len(names) != 0 {
		t.Fatalf("made through the symlink: %v", names)
	}
}

// A tree without what the links need is refused before anything is
// offered.
func TestCheckRefusesAnIncompleteTree(t *testing.T) {
	tree := toolsTree(t, "one")
	os.Chmod(filepath.Join(tree, dockerBinary), 0o644)
	if _, err := Check(tree); err == nil || !strings.Contains(err.Error(), "bin/docker") {
		t.Fatalf("a docker that is not executable: %v", err)
	}
	tree = toolsTree(t, "one")
	os.Remove(filepath.Join(tree, "cli-plugins/docker-buildx"))
	if _, err := Check(tree); err == nil {
		t.Fatal("a tree without buildx")
	}
	tree = toolsTree(t, "one")
	os.WriteFile(filepath.Join(tree, ManifestFile), []byte(`{"components":[]}`), 0o644)
	if _, err := Check(tree); err == nil {
		t.Fatal("a manifest naming nothing")
	}
	// kubectl is optional (older images lack it), but one that is there
	// must run.
	tree = toolsTree(t, "one") // without kubectl: accepted
	os.WriteFile(filepath.Join(tree, kubectlBinary), []byte("kubectl"), 0o755)
	if _, err := Check(tree); err != nil {
		t.Fatalf("a tree with kubectl: %v", err)
	}
	for name, plant := range map[string]func(p string){
		"not executable": func(p string) { os.Chmod(p, 0o644) },
		"a symlink":      func(p string) { os.Remove(p); os.Symlink("/bin/sh", p) },
		"a folder":       func(p string) { os.Remove(p); os.Mkdir(p, 0o755) },
	} {
		tree = toolsTree(t, "one")
		p := filepath.Join(tree, kubectlBinary)
		os.WriteFile(p, []byte("kubectl"), 0o755)
		plant(p)
		if _, err := Check(tree); err == nil || !strings.Contains(err.Error(), "bin/kubectl") {
			t.Errorf("a kubectl that is %s: %v", name, err)
		}
	}
}

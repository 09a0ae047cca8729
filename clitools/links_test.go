package clitools

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
)

const (
	testFolder = "docker-desktop/cli-tools"
	testStates = "docker-desktop/distros"
)

// offer lays out a shared copy as Publish leaves it (a plain folder here:
// the bind is the e2e tests'), version 0123456789ab current, kubectl in
// it.
func offer(t *testing.T, shared string) {
	t.Helper()
	offerOf(t, shared, kubectlBinary)
}

// offerOf is offer with the docker CLI's files and more.
func offerOf(t *testing.T, shared string, more ...string) {
	t.Helper()
	v := filepath.Join(shared, testFolder, "0123456789ab")
	for _, f := range append([]string{dockerBinary, "cli-plugins/docker-compose", "cli-plugins/docker-buildx", "completion/bash/docker", "completion/zsh/_docker", "completion/fish/docker.fish"}, more...) {
		os.MkdirAll(filepath.Dir(filepath.Join(v, f)), 0o755)
		if err := os.WriteFile(filepath.Join(v, f), []byte("#!/bin/sh\necho ddinit's "+f+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(v, ManifestFile), []byte(`{"components":[{"name":"docker","version":"29.10.0"},{"name":"docker-compose","version":"5.6.0"}]}`), 0o644)
	if err := os.Symlink("0123456789ab", filepath.Join(shared, testFolder, Current)); err != nil {
		t.Fatal(err)
	}
}

// distro is an empty distro root with the folders a fresh one has.
func distro(t *testing.T, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range append([]string{"usr/local/bin", "usr/bin", "home/user"}, dirs...) {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	return root
}

func linker(t *testing.T, root, shared string) *Linker {
	log := logrus.New()
	log.Out = io.Discard
	return &Linker{Root: root, Shared: shared, Folder: testFolder, States: testStates, Distro: "Ubuntu", Log: log}
}

// snapshot lists every path below root with its type and, for a link,
// its target.
func snapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimPrefix(p, root) + " " + d.Type().String()
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		out = append(out, line)
		return nil
	})
	return out
}

// runs reports what running the distro path p prints (through its links).
func runs(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		return ""
	}
	return string(b)
}

func TestLinksInAFreshDistro(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	root := distro(t, "usr/share/bash-completion/completions")
	before := snapshot(t, root)
	k := linker(t, root, shared)
	st, err := k.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/local/bin/docker", "/usr/local/bin/kubectl", "/usr/local/lib/docker/cli-plugins/docker-compose", "/usr/local/lib/docker/cli-plugins/docker-buildx", "/usr/share/bash-completion/completions/docker"}
	if !slices.Equal(st.Linked, want) || len(st.LeftAlone) != 0 || st.Tools != "docker 29.10.0, docker-compose 5.6.0" {
		t.Fatalf("state: %+v", st)
	}
	if !strings.Contains(runs(t, root, "/usr/local/bin/docker"), "ddinit's bin/docker") ||
		!strings.Contains(runs(t, root, "/usr/local/bin/kubectl"), "ddinit's bin/kubectl") ||
		!strings.Contains(runs(t, root, "/usr/local/lib/docker/cli-plugins/docker-compose"), "docker-compose") {
		t.Fatal("the links do not reach the shared copy")
	}
	// No zsh or fish here: no completion for them.
	if _, err := os.Lstat(filepath.Join(root, "usr/share/zsh")); err == nil {
		t.Fatal("a zsh folder was made")
	}
	// Written for ddinit status, and read back as written.
	states, err := ReadStates(shared, testStates)
	if err != nil || len(states) != 1 || states[0].Distro != "Ubuntu" || !slices.Equal(states[0].Linked, want) || states[0].Err != "" {
		t.Fatalf("states read back: %+v %v", states, err)
	}
	// A link removed is made again; the second check changes nothing else.
	os.Remove(filepath.Join(root, "usr/local/bin/docker"))
	os.Remove(filepath.Join(root, "usr/local/bin/kubectl"))
	if st, err := k.Reconcile(); err != nil || !slices.Equal(st.Linked, want) {
		t.Fatalf("again: %+v %v", st, err)
	}
	if runs(t, root, "/usr/local/bin/docker") == "" || runs(t, root, "/usr/local/bin/kubectl") == "" {
		t.Fatal("the removed link was not made again")
	}
	// Integration off: the distro is as it was.
	if err := k.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, root); !slices.Equal(before, after) {
		t.Fatalf("the distro changed:\nbefore %q\nafter  %q", before, after)
	}
	if states, _ := ReadStates(shared, testStates); len(states) != 0 {
		t.Fatalf("the state file stayed: %+v", states)
	}
}

// A docker or a plugin of the user's, anywhere the shell or the CLI would
// find it, keeps ddinit's link away, and one installed after the link was
// made has the link removed: nothing of ddinit's ever comes first.
func TestTheUsersOwnToolsAreLeftAlone(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	for _, tc := range []struct {
		name, theirs, link string
	}{
		{"docker from apt", "/usr/bin/docker", "/usr/local/bin/docker"},
		{"docker in /sbin", "/sbin/docker", "/usr/local/bin/docker"},
		{"a link of the user's", "/usr/local/bin/docker", "/usr/local/bin/docker"},
		{"compose from apt", "/usr/libexec/docker/cli-plugins/docker-compose", "/usr/local/lib/docker/cli-plugins/docker-compose"},
		{"compose in a home", "/home/user/.docker/cli-plugins/docker-compose", "/usr/local/lib/docker/cli-plugins/docker-compose"},
		{"buildx of root's", "/root/.docker/cli-plugins/docker-buildx", "/usr/local/lib/docker/cli-plugins/docker-buildx"},
		{"kubectl from apt", "/usr/bin/kubectl", "/usr/local/bin/kubectl"},
		{"kubectl in /usr/local/sbin", "/usr/local/sbin/kubectl", "/usr/local/bin/kubectl"},
		{"a kubectl link of the user's", "/usr/local/bin/kubectl", "/usr/local/bin/kubectl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(k *Linker, root string) {
				t.Helper()
				st, err := k.Reconcile()
				if err != nil {
					t.Fatal(err)
				}
				if runs(t, root, tc.theirs) != "mine\n" {
					t.Fatalf("the user's %s changed", tc.theirs)
				}
				if tc.link != tc.theirs {
					if _, err := os.Lstat(filepath.Join(root, tc.link)); err == nil {
						t.Fatalf("ddinit's %s is there beside the user's %s", tc.link, tc.theirs)
					}
				}
				if !slices.ContainsFunc(st.LeftAlone, func(l LeftAlone) bool { return l.Path == tc.theirs }) || slices.Contains(st.Linked, tc.link) {
					t.Fatalf("state: %+v", st)
				}
			}
			aLink := strings.HasPrefix(tc.name, "a ") && strings.HasSuffix(tc.name, "link of the user's")
			mine := func(root string) {
				p := filepath.Join(root, tc.theirs)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if aLink {
					// Relative, read through the root as the distro would.
					os.WriteFile(filepath.Join(root, "usr/bin/mine"), []byte("mine\n"), 0o755)
					os.Symlink("../../bin/mine", p)
					return
				}
				os.WriteFile(p, []byte("mine\n"), 0o755)
			}
			// There first.
			root := distro(t)
			mine(root)
			check(linker(t, root, shared), root)
			// Installed after ddinit's link.
			root = distro(t)
			k := linker(t, root, shared)
			if _, err := k.Reconcile(); err != nil {
				t.Fatal(err)
			}
			if aLink {
				os.Remove(filepath.Join(root, tc.link))
			}
			mine(root)
			check(k, root)
		})
	}
}

// With nothing offered (ddinit run not up yet, or gone), no link is made
// and those made before stay for when it comes back.
func TestNothingOfferedKeepsTheLinks(t *testing.T) {
	shared := t.TempDir()
	root := distro(t)
	k := linker(t, root, shared)
	st, err := k.Reconcile()
	if err != nil || len(st.Linked) != 0 || st.Tools != "" {
		t.Fatalf("nothing offered: %+v %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/local/bin/docker")); err == nil {
		t.Fatal("a link was made to nothing")
	}
	offer(t, shared)
	if _, err := k.Reconcile(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(shared, testFolder, Current))
	st, err = k.Reconcile()
	if err != nil || !slices.Contains(st.Linked, "/usr/local/bin/docker") || !slices.Contains(st.Linked, "/usr/local/bin/kubectl") {
		t.Fatalf("withdrawn: %+v %v", st, err)
	}
}

// An image older than kubectl's coming works as before, without it; a
// switch to one (a rollback) takes ddinit's kubectl link away rather than
// leave it leading nowhere, and a kubectl of the user's stays.
func TestAnOfferWithoutKubectl(t *testing.T) {
	shared := t.TempDir()
	offerOf(t, shared)
	root := distro(t)
	k := linker(t, root, shared)
	st, err := k.Reconcile()
	if err != nil || slices.Contains(st.Linked, "/usr/local/bin/kubectl") || !slices.Contains(st.Linked, "/usr/local/bin/docker") {
		t.Fatalf("an offer without kubectl: %+v %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/local/bin/kubectl")); err == nil {
		t.Fatal("a kubectl link to nothing was made")
	}
	// The newer image, then the older one again.
	v := filepath.Join(shared, testFolder, "0123456789ab")
	os.WriteFile(filepath.Join(v, kubectlBinary), []byte("ddinit's kubectl"), 0o755)
	if st, err := k.Reconcile(); err != nil || !slices.Contains(st.Linked, "/usr/local/bin/kubectl") {
		t.Fatalf("kubectl offered: %+v %v", st, err)
	}
	os.Remove(filepath.Join(v, kubectlBinary))
	if st, err := k.Reconcile(); err != nil || slices.Contains(st.Linked, "/usr/local/bin/kubectl") {
		t.Fatalf("kubectl no longer offered: %+v %v", st, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/local/bin/kubectl")); err == nil {
		t.Fatal("ddinit's kubectl link stayed, leading nowhere")
	}
	// The user's own kubectl is never touched, offered or not.
	os.WriteFile(filepath.Join(root, "usr/local/bin/kubectl"), []byte("mine\n"), 0o755)
	if _, err := k.Reconcile(); err != nil || runs(t, root, "/usr/local/bin/kubectl") != "mine\n" {
		t.Fatalf("the user's kubectl: %v", err)
	}
	if err := k.Uninstall(); err != nil || runs(t, root, "/usr/local/bin/kubectl") != "mine\n" {
		t.Fatalf("the user's kubectl after Uninstall: %v", err)
	}
}

// What every distro can write is read back bounded and checked: a file
// that is not JSON, too large, not a regular file, or that names another
// distro is listed with why, and the others are read.
func TestReadStatesOfAnyKind(t *testing.T) {
	shared := t.TempDir()
	dir := filepath.Join(shared, testStates)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "Debian.json"), []byte(`{"distro":"Debian","linked":["/usr/local/bin/docker"]}`), 0o644)
	os.WriteFile(filepath.Join(dir, "Bad.json"), []byte(`{"distro":`), 0o644)
	os.WriteFile(filepath.Join(dir, "Other.json"), []byte(`{"distro":"Debian"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "Huge.json"), make([]byte, maxStateBytes+1), 0o644)
	syscall.Mkfifo(filepath.Join(dir, "Fifo.json"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	states, err := ReadStates(shared, testStates)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]DistroState{}
	for _, s := range states {
		got[s.Distro] = s
	}
	if len(states) != 5 || got["Debian"].Err != "" || len(got["Debian"].Linked) != 1 {
		t.Fatalf("states: %+v", states)
	}
	for _, bad := range []string{"Bad", "Other", "Huge", "Fifo"} {
		if got[bad].Err == "" || len(got[bad].Linked) != 0 {
			t.Fatalf("%s: %+v", bad, got[bad])
		}
	}
}

// A symlink planted in the shared tmpfs where the state folder goes is
// refused, never followed.
func TestStatesRefuseASymlinkInTheWay(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	elsewhere := t.TempDir()
	os.Symlink(elsewhere, filepath.Join(shared, testStates))
	k := linker(t, distro(t), shared)
	if _, err := k.Reconcile(); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("a state folder that is a symlink: %v", err)
	}
	if names, _ := os.ReadDir(elsewhere); len(names) != 0 {
		t.Fatalf("written through the symlink: %v", names)
	}
}

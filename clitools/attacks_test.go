package clitools

// Attacks on the distro side (Linker) and the state files: what an
// unlucky or hostile distro can leave where ddinit looks.

import (
	"os"
	"path/filepath"
	"testing"
)

// Ubuntu's default PATH (/etc/environment) ends in /usr/games,
// /usr/local/games and /snap/bin: `snap install docker` (or `snap install
// kubectl --classic`) puts it in /snap/bin, after /usr/local/bin.
// ddinit's link must not shadow it.
func TestSnapDockerIsNotShadowed(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	for _, name := range []string{"docker", "kubectl"} {
		root := distro(t, "snap/bin")
		os.WriteFile(filepath.Join(root, "snap/bin", name), []byte("mine\n"), 0o755)
		st, err := linker(t, root, shared).Reconcile()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(root, "usr/local/bin", name)); err == nil {
			t.Errorf("ddinit linked /usr/local/bin/%s, which comes before the user's /snap/bin/%s on Ubuntu's default PATH; state: linked %v, left alone %v", name, name, st.Linked, st.LeftAlone)
		}
	}
}

// The state file is in a folder every distro can write: what it says
// ddinit made (an older format's "made" list, or another distro's
// writing) never has Uninstall remove a folder the distro shipped, e.g.
// an empty /usr/local/bin. Only folders carrying ddinit's mark go.
func TestUninstallTrustsNothingOfTheSharedTmpfs(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	root := distro(t, "usr/local/lib/docker/cli-plugins", "usr/local/share")
	// Written by another distro's root, before this one's uninstall.
	dir := filepath.Join(shared, testStates)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "Ubuntu.json"), []byte(`{"distro":"Ubuntu","made":["/usr/local/bin","/usr/local/lib/docker/cli-plugins","/usr/local/lib/docker"]}`), 0o644)
	if err := linker(t, root, shared).Uninstall(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"usr/local/bin", "usr/local/lib/docker/cli-plugins", "usr/local/lib/docker"} {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			t.Errorf("uninstall removed the distro's own /%s (ddinit never made it): %v", d, err)
		}
	}
}

// A user's link into the shared copy that is not exactly ddinit's (a
// path through "..", a version the user pinned) is the user's: neither
// replaced by Reconcile nor removed by Uninstall.
func TestAUsersLinkIntoTheOfferIsTheirs(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	for _, target := range []string{
		filepath.Join(shared, testFolder) + "/../../mine/docker",      // resolves outside the shared copy
		filepath.Join(shared, testFolder, "0123456789ab/bin/docker"),  // the user pinned a version
		filepath.Join(shared, testFolder, "0123456789ab/bin/kubectl"), // and kubectl's
	} {
		root := distro(t)
		p := filepath.Join(root, "usr/local/bin", filepath.Base(target))
		os.Symlink(target, p)
		k := linker(t, root, shared)
		if _, err := k.Reconcile(); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.Readlink(p); got != target {
			t.Errorf("the user's link to %s was replaced by Reconcile: now -> %s", target, got)
		}
		os.Remove(p)
		os.Symlink(target, p)
		if err := k.Uninstall(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("Uninstall removed the user's link to %s", target)
		}
	}
}

// A symlink planted as X.json is refused, not followed: ddinit status
// never reads a file of its own distro outside the shared tmpfs.
func TestReadStatesRefusesAPlantedSymlink(t *testing.T) {
	shared := t.TempDir()
	dir := filepath.Join(shared, testStates)
	os.MkdirAll(dir, 0o755)
	secret := filepath.Join(t.TempDir(), "private.json")
	os.WriteFile(secret, []byte(`{"distro":"X","linked":["the content of a private file"]}`), 0o600)
	os.Symlink(secret, filepath.Join(dir, "X.json"))
	states, err := ReadStates(shared, testStates)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) == 1 && states[0].Err == "" {
		t.Errorf("a symlink out of the shared tmpfs was read: %+v", states[0].State)
	}
}

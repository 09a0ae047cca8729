package kubeconfig

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// home is a distro root whose user (this test's own uid, so no root is
// needed) has a home and nothing in it.
func home(t *testing.T) (root string, u User) {
	t.Helper()
	root = t.TempDir()
	u = User{Name: "me", UID: os.Geteuid(), GID: os.Getegid(), Home: "/home/me"}
	os.MkdirAll(filepath.Join(root, u.Home), 0o755)
	return root, u
}

func merge(o Offer) Edit { return func(b []byte) ([]byte, bool, error) { return Merge(b, o) } }

func stat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t)
}

// entries lists a folder's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	list, _ := os.ReadDir(dir)
	for _, e := range list {
		names = append(names, e.Name())
	}
	return names
}

// A user without ~/.kube gets it (0700) and a config (0600), theirs,
// holding ours; merged again, the file is not rewritten.
func TestUpdateMakesTheUsersKubeconfig(t *testing.T) {
	root, u := home(t)
	o := testOffer(t, "Q0VSVAo=")
	r, err := Update(root, u, true, merge(o))
	if err != nil || !r.Wrote || !r.Created || r.File != "/home/me/.kube/config" {
		t.Fatalf("%+v %v", r, err)
	}
	dir, file := filepath.Join(root, "home/me/.kube"), filepath.Join(root, "home/me/.kube/config")
	if st := stat(t, dir); st.Mode&0o7777 != 0o700 || int(st.Uid) != u.UID || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("~/.kube: %o uid %d", st.Mode, st.Uid)
	}
	if st := stat(t, file); st.Mode&0o7777 != 0o600 || int(st.Uid) != u.UID || int(st.Gid) != u.GID {
		t.Fatalf("config: %o %d:%d", st.Mode, st.Uid, st.Gid)
	}
	b, _ := os.ReadFile(file)
	ours(t, decoded(t, b), o)
	ino := stat(t, file).Ino
	if r, err := Update(root, u, true, merge(o)); err != nil || r.Wrote {
		t.Fatalf("again: %+v %v", r, err)
	}
	if stat(t, file).Ino != ino {
		t.Fatal("rewritten with nothing new")
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("left in ~/.kube: %q", names)
	}
	// Removal without create makes nothing for a user who has nothing.
	root2, u2 := home(t)
	if r, err := Update(root2, u2, false, Remove); err != nil || r.Wrote {
		t.Fatalf("remove from nothing: %+v %v", r, err)
	}
	if _, err := os.Lstat(filepath.Join(root2, "home/me/.kube")); err == nil {
		t.Fatal("~/.kube made for a removal")
	}
}

// A file there keeps its mode (and group), is replaced whole (a new
// inode, no temporary file or lock left), and kubectl's lock held by
// someone else defers the edit.
func TestUpdateReplacesInOneRename(t *testing.T) {
	root, u := home(t)
	o := testOffer(t, "Q0VSVAo=")
	dir := filepath.Join(root, "home/me/.kube")
	file := filepath.Join(dir, "config")
	os.Mkdir(dir, 0o755)
	mine := []byte("apiVersion: v1\ncurrent-context: prod\nclusters:\n- name: prod\n  cluster: {server: https://prod}\n")
	os.WriteFile(file, mine, 0o640)
	os.Chmod(file, 0o640)
	before := stat(t, file)

	os.WriteFile(filepath.Join(dir, "config.lock"), nil, 0o600)
	r, err := Update(root, u, true, merge(o))
	if err == nil || !strings.Contains(err.Error(), "locked") || r.Wrote {
		t.Fatalf("under kubectl's lock: %+v %v", r, err)
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, mine) {
		t.Fatal("written under kubectl's lock")
	}
	os.Remove(filepath.Join(dir, "config.lock"))

	if r, err := Update(root, u, true, merge(o)); err != nil || !r.Wrote || r.Created {
		t.Fatalf("%+v %v", r, err)
	}
	after := stat(t, file)
	if after.Mode&0o7777 != 0o640 || after.Gid != before.Gid || after.Uid != before.Uid || after.Ino == before.Ino {
		t.Fatalf("mode %o→%o, owner %d:%d→%d:%d, inode %d→%d", before.Mode, after.Mode, before.Uid, before.Gid, after.Uid, after.Gid, before.Ino, after.Ino)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("left in ~/.kube: %q", names)
	}
	b, _ := os.ReadFile(file)
	if m := decoded(t, b); m[CurrentContext] != "prod" || !sameMeaning(t, others(decoded(t, mine)), others(m)) {
		t.Fatalf("merged:\n%s", b)
	}
}

// A file that does not parse is never overwritten: the error says why.
func TestUpdateLeavesAnUnparseableFile(t *testing.T) {
	root, u := home(t)
	dir := filepath.Join(root, "home/me/.kube")
	os.Mkdir(dir, 0o700)
	bad := []byte("apiVersion: v1\nclusters:\n\t- oops\n")
	os.WriteFile(filepath.Join(dir, "config"), bad, 0o600)
	r, err := Update(root, u, true, merge(testOffer(t, "Q0VSVAo=")))
	if !errors.Is(err, ErrNotEditable) || !strings.Contains(err.Error(), "/home/me/.kube/config") || !strings.Contains(err.Error(), "does not parse") || r.Wrote {
		t.Fatalf("%+v %v", r, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config")); !bytes.Equal(b, bad) {
		t.Fatal("an unparseable file was rewritten")
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("left in ~/.kube: %q", names)
	}
}

// ~/.kube as a symlink is refused, never followed: nothing is written
// where it leads. Something other than a regular file at
// ~/.kube/config (a FIFO, a folder) is left alone, without waiting on
// it.
func TestUpdateRefusesWhatIsInTheWay(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	elsewhere := t.TempDir()
	for name, plant := range map[string]func(kube string){
		"~/.kube a symlink":        func(kube string) { os.Symlink(elsewhere, kube) },
		"~/.kube a file":           func(kube string) { os.WriteFile(kube, nil, 0o600) },
		"a FIFO at ~/.kube/config": func(kube string) { os.Mkdir(kube, 0o700); syscall.Mkfifo(filepath.Join(kube, "config"), 0o600) },
		"a folder at the config":   func(kube string) { os.MkdirAll(filepath.Join(kube, "config"), 0o700) },
		"a link to a FIFO": func(kube string) {
			os.Mkdir(kube, 0o700)
			syscall.Mkfifo(filepath.Join(elsewhere, "fifo"), 0o600)
			os.Symlink(filepath.Join(elsewhere, "fifo"), filepath.Join(kube, "config"))
		},
		"a link leading nowhere": func(kube string) {
			os.Mkdir(kube, 0o700)
			os.Symlink(filepath.Join(elsewhere, "missing"), filepath.Join(kube, "config"))
		},
		"a link to a folder": func(kube string) { os.Mkdir(kube, 0o700); os.Symlink(elsewhere, filepath.Join(kube, "config")) },
		"a link in a loop":   func(kube string) { os.Mkdir(kube, 0o700); os.Symlink("config", filepath.Join(kube, "config")) },
		"a huge file at the config": func(kube string) {
			os.Mkdir(kube, 0o700)
			os.WriteFile(filepath.Join(kube, "config"), make([]byte, MaxConfigBytes+1), 0o600)
		},
	} {
		root, u := home(t)
		kube := filepath.Join(root, "home/me/.kube")
		plant(kube)
		before := entries(t, elsewhere)
		done := make(chan struct{})
		var r Result
		var err error
		go func() { r, err = Update(root, u, true, merge(o)); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Update hangs", name)
		}
		if err == nil || r.Wrote {
			t.Errorf("%s: %+v %v", name, r, err)
		}
		if after := entries(t, elsewhere); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Errorf("%s: written where a symlink leads: %q", name, after)
		}
		t.Logf("%s: %v", name, err)
		os.RemoveAll(filepath.Join(elsewhere, "fifo"))
	}
}

// ~/.kube/config as a link the user made (to the Windows kubeconfig, a
// dotfiles repository) is written through to the file it leads to, in
// that file's folder; the link stays a link.
func TestUpdateWritesThroughTheUsersLink(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	root, u := home(t)
	kube := filepath.Join(root, "home/me/.kube")
	os.Mkdir(kube, 0o700)
	windows := filepath.Join(t.TempDir(), "Users/me/.kube")
	os.MkdirAll(windows, 0o755)
	target := filepath.Join(windows, "config")
	mine := []byte("apiVersion: v1\nclusters:\n- name: prod\n  cluster: {server: https://prod}\ncurrent-context: prod\n")
	os.WriteFile(target, mine, 0o644)
	// Relative, through a folder link: resolved as kubectl's open does.
	os.Symlink(windows, filepath.Join(root, "home/me/win"))
	os.Symlink("../win/config", filepath.Join(kube, "config"))
	r, err := Update(root, u, true, merge(o))
	if err != nil || !r.Wrote || r.File != target {
		t.Fatalf("%+v %v", r, err)
	}
	if got, _ := os.Readlink(filepath.Join(kube, "config")); got != "../win/config" {
		t.Fatalf("the link is now %q", got)
	}
	b, _ := os.ReadFile(target)
	m := decoded(t, b)
	ours(t, m, o)
	if m[CurrentContext] != "prod" || stat(t, target).Mode&0o777 != 0o644 {
		t.Fatalf("through the link:\n%s", b)
	}
	if names := entries(t, windows); len(names) != 1 {
		t.Fatalf("left beside the target: %q", names)
	}
	if names := entries(t, kube); len(names) != 1 {
		t.Fatalf("left in ~/.kube: %q", names)
	}
	// And taken out the same way.
	if r, err := Update(root, u, false, Remove); err != nil || !r.Wrote {
		t.Fatalf("remove: %+v %v", r, err)
	}
	if b, _ := os.ReadFile(target); !sameMeaning(t, others(decoded(t, mine)), others(decoded(t, b))) || Merged(b) {
		t.Fatalf("after remove:\n%s", b)
	}
}

// asAnotherUser is a distro root whose user, uid 4242, owns its home:
// the proxy (this test, as root) acts as them. Root is needed only to
// give the folder away, and nothing outside the test's folders is
// touched, so this runs wherever the tests run as root (not only under
// DDINIT_TEST_ROOT), and is skipped elsewhere.
func asAnotherUser(t *testing.T) (string, User) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: acts as another user")
	}
	root, u := home(t)
	u.UID, u.GID, u.Groups = 4242, 4242, []int{4343}
	os.Chmod(filepath.Dir(root), 0o755) // t.TempDir's own parent is root's alone
	if err := os.Chown(filepath.Join(root, u.Home), u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	return root, u
}

// A file that is not the user's (a root-owned one `sudo kubectl` made,
// or one a link leads to) keeps its owner: it is left alone.
func TestUpdateLeavesOthersFiles(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	root, u := asAnotherUser(t)
	kube := filepath.Join(root, "home/me/.kube")
	os.Mkdir(kube, 0o700)
	os.Chown(kube, u.UID, u.GID)
	file := filepath.Join(kube, "config")
	os.WriteFile(file, []byte("apiVersion: v1\n"), 0o644) // this test's: root's
	r, err := Update(root, u, true, merge(o))
	if err == nil || !strings.Contains(err.Error(), "belongs to uid") || r.Wrote {
		t.Fatalf("root's config: %+v %v", r, err)
	}
	os.Remove(file)
	secret := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(secret, []byte("root's"), 0o644)
	os.Symlink(secret, file)
	if r, err := Update(root, u, true, merge(o)); err == nil || r.Wrote {
		t.Fatalf("a link to root's file: %+v %v", r, err)
	}
	if b, _ := os.ReadFile(secret); string(b) != "root's" {
		t.Fatal("root's file was written through the user's link")
	}
}

// As root, the proxy acts as the user: what it makes is theirs (owner
// and group, without a chown), and a link of theirs reaches nothing they
// could not write themselves — root's files stay as they are.
func TestUpdateActsAsTheUser(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	root, u := asAnotherUser(t)
	r, err := Update(root, u, true, merge(o))
	if err != nil || !r.Created {
		t.Fatalf("%+v %v", r, err)
	}
	for _, p := range []string{"home/me/.kube", "home/me/.kube/config"} {
		if st := stat(t, filepath.Join(root, p)); int(st.Uid) != u.UID || int(st.Gid) != u.GID {
			t.Errorf("%s is %d:%d, not the user's", p, st.Uid, st.Gid)
		}
	}
	// The file kept in another group of the user's keeps it.
	file := filepath.Join(root, "home/me/.kube/config")
	os.Chown(file, u.UID, 4343)
	if r, err := Update(root, u, true, merge(testOffer(t, "TkVXCg=="))); err != nil || !r.Wrote {
		t.Fatalf("again: %+v %v", r, err)
	}
	if st := stat(t, file); int(st.Uid) != u.UID || st.Gid != 4343 {
		t.Errorf("rewritten as %d:%d, not %d:4343", st.Uid, st.Gid, u.UID)
	}
	// A link to a file of root's the user cannot write (0600 and
	// root's): not read, not written.
	secret := filepath.Join(t.TempDir(), "secret")
	os.Chmod(filepath.Dir(secret), 0o755)
	os.WriteFile(secret, []byte("root's"), 0o600)
	os.Remove(file)
	os.Symlink(secret, file)
	if r, err := Update(root, u, true, merge(o)); err == nil || r.Wrote {
		t.Fatalf("a link to root's file: %+v %v", r, err)
	} else {
		t.Log(err)
	}
	if b, _ := os.ReadFile(secret); string(b) != "root's" {
		t.Fatal("root's file was written through the user's link")
	}
	// The proxy's own threads are still root's.
	if err := os.WriteFile(filepath.Join(t.TempDir(), "x"), nil, 0o600); err != nil || os.Geteuid() != 0 {
		t.Fatalf("the proxy lost root: %v", err)
	}
}

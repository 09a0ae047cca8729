package kubeports

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"
)

const sharedKubeconfig = "docker-desktop/kubernetes/config"

// testGroup is a group the test may give a file: any as root, its own
// otherwise.
func testGroup() int {
	if os.Geteuid() == 0 {
		return 4242
	}
	return os.Getgid()
}

// The kubeconfig is offered as the data store has it, mode 0640, root's
// and the docker group's; written again when it changes (and only
// then); removed when withdrawn, with nothing made for it.
func TestOfferKubeconfig(t *testing.T) {
	shared, store := t.TempDir(), t.TempDir()
	src := filepath.Join(store, "admin.conf")
	os.WriteFile(src, []byte(`{"one":1}`), 0o600)
	log, _ := quietLog()
	gid := testGroup()
	o := &offer{shared: shared, rel: sharedKubeconfig, group: func() (int, error) { return gid, nil }, log: log}
	if err := o.put(src); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(shared, sharedKubeconfig)
	st, err := os.Lstat(dst)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode() != 0o640 || int(sys.Gid) != gid || int(sys.Uid) != os.Geteuid() {
		t.Fatalf("offered as %v %d:%d; want -rw-r----- %d:%d", st.Mode(), sys.Uid, sys.Gid, os.Geteuid(), gid)
	}
	if b, _ := os.ReadFile(dst); string(b) != `{"one":1}` {
		t.Fatalf("offered %q", b)
	}
	// The same content: left as it is.
	if err := o.put(src); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Lstat(dst); again.Sys().(*syscall.Stat_t).Ino != sys.Ino {
		t.Error("rewritten with nothing changed")
	}
	// A reset: new credentials.
	os.WriteFile(src, []byte(`{"two":2}`), 0o600)
	if err := o.put(src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != `{"two":2}` {
		t.Fatalf("after a change, offered %q", b)
	}
	if err := o.withdraw(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("withdrawn, it is still there: %v", err)
	}
	// Nothing there: nothing to do, and no folder made for it.
	empty := t.TempDir()
	o2 := &offer{shared: empty, rel: sharedKubeconfig, group: o.group, log: log}
	if err := o2.withdraw(); err != nil {
		t.Fatal(err)
	}
	if names, _ := os.ReadDir(empty); len(names) != 0 {
		t.Errorf("withdrawing nothing made %v", names)
	}
}

// Without a docker group the kubeconfig is root's alone, and the log
// says so once.
func TestOfferWithoutDockerGroup(t *testing.T) {
	shared, src := t.TempDir(), filepath.Join(t.TempDir(), "admin.conf")
	os.WriteFile(src, []byte(`{}`), 0o600)
	log, hook := quietLog()
	o := &offer{shared: shared, rel: sharedKubeconfig, group: func() (int, error) { return 0, errors.New("group: unknown group docker") }, log: log}
	for i := range 2 {
		os.WriteFile(src, []byte(strings.Repeat("x", i+1)), 0o600)
		if err := o.put(src); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := os.Lstat(filepath.Join(shared, sharedKubeconfig))
	if gid := st.Sys().(*syscall.Stat_t).Gid; gid != 0 && os.Geteuid() == 0 {
		t.Errorf("group %d, want root's", gid)
	}
	told := 0
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "no docker group") && e.Data[logrus.ErrorKey] != nil {
			told++
		}
	}
	if told != 1 {
		t.Errorf("told %d times there is no docker group", told)
	}
}

// A symlink another distro planted on the way to the kubeconfig is
// refused (nothing is written where it points); one at its name is
// replaced, never written through; a withdraw removes the link, not its
// target.
func TestOfferRefusesSymlinks(t *testing.T) {
	shared, elsewhere := t.TempDir(), t.TempDir()
	src := filepath.Join(t.TempDir(), "admin.conf")
	os.WriteFile(src, []byte(`{"secret":1}`), 0o600)
	log, _ := quietLog()
	o := &offer{shared: shared, rel: sharedKubeconfig, group: func() (int, error) { return testGroup(), nil }, log: log}

	os.Symlink(elsewhere, filepath.Join(shared, "docker-desktop"))
	if err := o.put(src); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("offered through a symlinked folder: %v", err)
	}
	if names, _ := os.ReadDir(elsewhere); len(names) != 0 {
		t.Fatalf("written through the symlink: %v", names)
	}
	os.MkdirAll(filepath.Join(elsewhere, "kubernetes"), 0o755)
	os.WriteFile(filepath.Join(elsewhere, "kubernetes/config"), []byte("theirs"), 0o644)
	if err := o.withdraw(); err == nil {
		t.Error("withdrew through a symlinked folder")
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "kubernetes/config")); err != nil {
		t.Errorf("removed through the symlink: %v", err)
	}
	os.RemoveAll(filepath.Join(elsewhere, "kubernetes"))

	os.Remove(filepath.Join(shared, "docker-desktop"))
	os.MkdirAll(filepath.Join(shared, "docker-desktop/kubernetes"), 0o755)
	victim := filepath.Join(elsewhere, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	dst := filepath.Join(shared, sharedKubeconfig)
	os.Symlink(victim, dst)
	if err := o.put(src); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("written through the link: the target holds %q", b)
	}
	if st, _ := os.Lstat(dst); !st.Mode().IsRegular() || st.Mode().Perm() != 0o640 {
		t.Fatalf("the link was not replaced by the file: %v", st.Mode())
	}
	os.Remove(dst)
	os.Symlink(victim, dst)
	if err := o.withdraw(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Error("the link is still there")
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("its target went: %v", err)
	}
}

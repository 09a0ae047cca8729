package clitools

// Attacks the distro side and the offer withstand: a user's odd files,
// hostile state files and names, the bind's reach.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ddinit/ddinit/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestOddThingsOfTheUsersAreLeftAlone(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	for name, plant := range map[string]func(root string){
		"dangling docker link": func(r string) { os.Symlink("/nowhere", filepath.Join(r, "usr/local/bin/docker")) },
		"docker folder":        func(r string) { os.Mkdir(filepath.Join(r, "usr/local/bin/docker"), 0o755) },
		"docker in /usr/local/sbin": func(r string) {
			os.MkdirAll(filepath.Join(r, "usr/local/sbin"), 0o755)
			os.WriteFile(filepath.Join(r, "usr/local/sbin/docker"), nil, 0o755)
		},
		"compose in /usr/lib": func(r string) {
			os.MkdirAll(filepath.Join(r, "usr/lib/docker/cli-plugins"), 0o755)
			os.WriteFile(filepath.Join(r, "usr/lib/docker/cli-plugins/docker-compose"), nil, 0o755)
		},
		"dangling kubectl link": func(r string) { os.Symlink("/nowhere", filepath.Join(r, "usr/local/bin/kubectl")) },
		"kubectl folder":        func(r string) { os.Mkdir(filepath.Join(r, "usr/local/bin/kubectl"), 0o755) },
		"kubectl in /bin": func(r string) {
			os.MkdirAll(filepath.Join(r, "bin"), 0o755)
			os.WriteFile(filepath.Join(r, "bin/kubectl"), nil, 0o755)
		},
		"compose in /usr/local/libexec": func(r string) {
			os.MkdirAll(filepath.Join(r, "usr/local/libexec/docker/cli-plugins"), 0o755)
			os.Symlink("/nowhere", filepath.Join(r, "usr/local/libexec/docker/cli-plugins/docker-compose"))
		},
	} {
		root := distro(t)
		plant(root)
		before := snapshot(t, root)
		st, err := linker(t, root, shared).Reconcile()
		if err != nil || len(st.LeftAlone) != 1 {
			t.Errorf("%s: %+v %v", name, st, err)
		}
		if err := linker(t, root, shared).Uninstall(); err != nil {
			t.Fatal(err)
		}
		if after := snapshot(t, root); strings.Join(before, "\n") != strings.Join(after, "\n") {
			t.Errorf("%s: changed\n%q\n%q", name, before, after)
		}
	}
}

func TestUninstallKeepsAReplacedLink(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	root := distro(t)
	k := linker(t, root, shared)
	k.Reconcile()
	p := filepath.Join(root, "usr/local/bin/docker")
	os.Remove(p)
	os.Symlink("/opt/docker/bin/docker", p)
	kc := filepath.Join(root, "usr/local/bin/kubectl")
	os.Remove(kc)
	os.WriteFile(kc, []byte("mine"), 0o755)
	c := filepath.Join(root, "usr/local/lib/docker/cli-plugins/docker-compose")
	os.Remove(c)
	os.WriteFile(c, []byte("mine"), 0o755)
	if err := k.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(p); got != "/opt/docker/bin/docker" {
		t.Errorf("user's link: %q", got)
	}
	if b, _ := os.ReadFile(c); string(b) != "mine" {
		t.Errorf("user's compose: %q", b)
	}
	if b, _ := os.ReadFile(kc); string(b) != "mine" {
		t.Errorf("user's kubectl: %q", b)
	}
}

func TestBadDistroNamesStayInTheFolder(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	for _, name := range []string{"../x", "a/b", "", "..", "."} {
		k := linker(t, distro(t), shared)
		k.Distro = name
		_, err := k.Reconcile()
		t.Logf("%q: %v", name, err)
	}
	var found []string
	filepath.Walk(shared, func(p string, _ os.FileInfo, _ error) error {
		if strings.HasSuffix(p, ".json") && !strings.Contains(p, "0123456789ab") {
			found = append(found, strings.TrimPrefix(p, shared))
		}
		return nil
	})
	for _, f := range found {
		if filepath.Dir(f) != "/"+testStates {
			t.Errorf("written outside the states folder: %s", f)
		}
	}
	t.Logf("state files: %q", found)
}

func TestHostileStateFiles(t *testing.T) {
	shared := t.TempDir()
	dir := filepath.Join(shared, testStates)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "U\xff\x1b[2J\n.json"), []byte("{\"distro\":\"U\xff\x1b[2J\n\",\"linked\":[\"\xfe\x00\"]}"), 0o644)
	os.Mkdir(filepath.Join(dir, "D.json"), 0o755)
	os.Symlink("/dev/zero", filepath.Join(dir, "Z.json"))
	os.Symlink("Z.json", filepath.Join(dir, "L.json"))
	unix.Mkfifo(filepath.Join(dir, "F.json"), 0o644)
	done := make(chan struct{})
	go func() {
		defer close(done)
		states, err := ReadStates(shared, testStates)
		if err != nil || len(states) != 5 {
			t.Errorf("%v %+v", err, states)
		}
		for _, s := range states {
			t.Logf("%q err=%q linked=%q", s.Distro, s.Err, s.Linked)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ReadStates hangs")
	}
}

// In a synctest bubble: the second is the bubble's, which passes only
// while Keep waits (for its next check, every 5 s), never while a loaded
// machine keeps it busy.
func TestKeepStopsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		shared := t.TempDir()
		offer(t, shared)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { linker(t, distro(t), shared).Keep(ctx); close(done) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("Keep did not return")
		}
	})
}

// The bind: read-only, nosuid, nodev in a peer; nothing mounted below the
// source comes along; the machine's own namespace never sees it.
func TestTheBind(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	tree := toolsTree(t, "one")
	os.Mkdir(filepath.Join(tree, "sub"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(tree, "sub"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tree, "sub/below"), nil, 0o644)
	if err := Publish(shared, testFolder, tree, "aaaaaaaaaaaa"); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	unix.Statfs(filepath.Join(shared, testFolder, "current/bin"), &st)
	want := int64(unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV)
	if st.Flags&want != want {
		t.Errorf("flags %#x", st.Flags)
	}
	if _, err := os.Stat(filepath.Join(shared, testFolder, "current/sub/below")); err == nil {
		t.Error("a submount of the source came along")
	}
	// Remount rw from the same namespace is refused? (root can; note only)
	Withdraw(shared, testFolder)
	unix.Unmount(filepath.Join(tree, "sub"), unix.MNT_DETACH)
}

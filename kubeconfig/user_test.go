package kubeconfig

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// accounts is a distro root with this /etc/passwd and /etc/group, and a
// home folder for each user named in homes.
func accounts(t *testing.T, passwd, group string, homes ...string) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644)
	if group != "" {
		os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644)
	}
	for _, h := range homes {
		os.MkdirAll(filepath.Join(root, h), 0o755)
	}
	return root
}

const ubuntuPasswd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
syslog:x:104:110::/home/syslog:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
ghost:x:999:999::/home/ghost:/bin/bash
later:x:1001:1001::/home/later:/bin/bash
me:x:1000:1000:Me,,,:/home/me:/bin/bash
`

// WSL's first start makes one user, uid 1000: that one, not root, not a
// system user, not a later one.
func TestDefaultUserIsTheFirstMadeOne(t *testing.T) {
	root := accounts(t, ubuntuPasswd, "sudo:x:27:me\ndocker:x:999:me,later\nme:x:1000:\n", "root", "home/me", "home/later", "home/syslog", "home/ghost")
	u, err := DefaultUser(root)
	if err != nil || u.Name != "me" || u.UID != 1000 || u.GID != 1000 || u.Home != "/home/me" || !slices.Equal(u.Groups, []int{27, 999}) {
		t.Fatalf("%+v %v", u, err)
	}
	users, err := Users(root)
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if err != nil || !slices.Equal(names, []string{"root", "later", "me"}) {
		t.Fatalf("users: %q %v", names, err)
	}
}

// /etc/wsl.conf's [user] default wins; a user whose home is not there is
// not the default; a distro with no user but root (`wsl --import`) has
// root's.
func TestDefaultUserOtherwise(t *testing.T) {
	root := accounts(t, ubuntuPasswd, "", "root", "home/me", "home/later")
	os.WriteFile(filepath.Join(root, "etc/wsl.conf"), []byte("[boot]\nsystemd=true\n[user]\n# who\ndefault = later\n"), 0o644)
	if u, err := DefaultUser(root); err != nil || u.Name != "later" {
		t.Fatalf("wsl.conf's: %+v %v", u, err)
	}
	// One wsl.conf names is among those --uninstall looks at, whatever
	// its uid.
	os.WriteFile(filepath.Join(root, "etc/wsl.conf"), []byte("[user]\ndefault=syslog\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "home/syslog"), 0o755)
	if u, err := DefaultUser(root); err != nil || u.Name != "syslog" {
		t.Fatalf("wsl.conf's system user: %+v %v", u, err)
	}
	if users, err := Users(root); err != nil || !slices.ContainsFunc(users, func(u User) bool { return u.Name == "syslog" }) {
		t.Fatalf("users: %+v %v", users, err)
	}
	os.WriteFile(filepath.Join(root, "etc/wsl.conf"), []byte("[user]\ndefault=nosuchuser\n"), 0o644)
	if u, err := DefaultUser(root); err != nil || u.Name != "me" {
		t.Fatalf("wsl.conf naming no user: %+v %v", u, err)
	}
	root = accounts(t, ubuntuPasswd, "", "root", "home/later")
	if u, err := DefaultUser(root); err != nil || u.Name != "later" {
		t.Fatalf("uid 1000 without a home: %+v %v", u, err)
	}
	root = accounts(t, "root:x:0:0:root:/root:/bin/sh\nbroken line\nx:x:abc:0::/x:/bin/sh\n", "", "root")
	if u, err := DefaultUser(root); err != nil || u.Name != "root" || u.Home != "/root" {
		t.Fatalf("only root: %+v %v", u, err)
	}
	root = accounts(t, "daemon:x:1:1::/usr/sbin:/bin/false\n", "")
	if u, err := DefaultUser(root); err == nil {
		t.Fatalf("no user at all: %+v", u)
	}
	if _, err := DefaultUser(t.TempDir()); err == nil {
		t.Fatal("no /etc/passwd")
	}
}

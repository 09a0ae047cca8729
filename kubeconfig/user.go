package kubeconfig

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ddinit/ddinit/regularfile"
)

// User is a distro user whose kubeconfig ddinit keeps.
type User struct {
	Name     string
	UID, GID int
	// Groups are the other groups it is in (/etc/group): a file of its
	// kept in one of them keeps its group when rewritten.
	Groups []int
	// Home is its home folder, as the distro names it.
	Home string
}

// maxAccountsBytes bounds /etc/passwd, /etc/group and /etc/wsl.conf.
const maxAccountsBytes = 4 << 20

// firstUID is where useradd starts the users people log in as; the
// first one WSL's first start makes gets it.
const firstUID = 1000

// nobody is the overflow uid: never a user's.
const nobody = 65534

// DefaultUser is the user WSL starts the distro's shells as, the one
// whose kubectl should find the docker-desktop context: the user
// /etc/wsl.conf names ([user] default), else the first with uid 1000 or
// more whose home is a folder (the user WSL's first start makes), else
// root (a distro imported with `wsl --import` and no user made starts as
// root). Only /etc/passwd is read: a user from a directory service is
// not one WSL makes.
func DefaultUser(root string) (User, error) {
	users, err := readUsers(root)
	if err != nil {
		return User{}, err
	}
	if name := wslDefaultUser(root); name != "" {
		if i := slices.IndexFunc(users, func(u User) bool { return u.Name == name }); i >= 0 {
			return users[i], nil
		}
	}
	var best *User
	for i, u := range users {
		if u.UID >= firstUID && u.UID != nobody && isDir(root, u.Home) && (best == nil || u.UID < best.UID) {
			best = &users[i]
		}
	}
	if best != nil {
		return *best, nil
	}
	if i := slices.IndexFunc(users, func(u User) bool { return u.UID == 0 }); i >= 0 {
		return users[i], nil
	}
	return User{}, fmt.Errorf("/etc/passwd names no user with uid %d or more and a home, nor root", firstUID)
}

// Users are the users whose kubeconfig ddinit may have written in some
// run (the default user may have changed since): root, each with uid
// 1000 or more and a home, and the one /etc/wsl.conf names.
func Users(root string) ([]User, error) {
	users, err := readUsers(root)
	if err != nil {
		return nil, err
	}
	named := wslDefaultUser(root)
	var out []User
	for _, u := range users {
		if (u.UID == 0 || u.UID >= firstUID && u.UID != nobody || u.Name == named) && isDir(root, u.Home) {
			out = append(out, u)
		}
	}
	return out, nil
}

// readUsers reads the distro's /etc/passwd, with each user's groups from
// /etc/group.
func readUsers(root string) ([]User, error) {
	b, err := regularfile.Read(filepath.Join(root, "etc/passwd"), maxAccountsBytes)
	if err != nil {
		return nil, fmt.Errorf("the distro's users: %w", err)
	}
	var users []User
	for _, line := range lines(b) {
		f := strings.Split(line, ":")
		if len(f) != 7 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 || f[0] == "" || !filepath.IsAbs(f[5]) || slices.ContainsFunc(users, func(u User) bool { return u.Name == f[0] }) {
			continue
		}
		users = append(users, User{Name: f[0], UID: uid, GID: gid, Home: filepath.Clean(f[5])})
	}
	// A missing /etc/group only costs the files' groups outside the
	// user's own.
	g, _ := regularfile.Read(filepath.Join(root, "etc/group"), maxAccountsBytes)
	for _, line := range lines(g) {
		f := strings.Split(line, ":")
		if len(f) != 4 {
			continue
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil || gid < 0 {
			continue
		}
		for _, member := range strings.Split(f[3], ",") {
			for i := range users {
				if users[i].Name == member && users[i].GID != gid && !slices.Contains(users[i].Groups, gid) {
					users[i].Groups = append(users[i].Groups, gid)
				}
			}
		}
	}
	return users, nil
}

// wslDefaultUser is the user /etc/wsl.conf's [user] section names as
// the default ("" for none).
func wslDefaultUser(root string) string {
	b, err := regularfile.Read(filepath.Join(root, "etc/wsl.conf"), maxAccountsBytes)
	if err != nil {
		return ""
	}
	section, name := "", ""
	for _, line := range lines(b) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.ToLower(strings.TrimSpace(line[1 : len(line)-1]))
		case section == "user":
			k, v, ok := strings.Cut(line, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "default") {
				name = strings.Trim(strings.TrimSpace(v), `"'`)
			}
		}
	}
	return name
}

func lines(b []byte) []string {
	var out []string
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(nil, maxAccountsBytes)
	for s.Scan() {
		if line := s.Text(); line != "" && !strings.HasPrefix(strings.TrimSpace(line), "#") && !strings.HasPrefix(strings.TrimSpace(line), ";") {
			out = append(out, line)
		}
	}
	return out
}

func isDir(root, p string) bool {
	st, err := os.Stat(filepath.Join(root, p))
	return err == nil && st.IsDir()
}

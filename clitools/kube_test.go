package clitools

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ddinit/ddinit/kubeconfig"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

const testKubeconfig = "docker-desktop/kubernetes/config"

// offerKube offers the cluster's kubeconfig as ddinit run does, with
// the client certificate cert.
func offerKube(t *testing.T, shared, cert string) {
	t.Helper()
	p := filepath.Join(shared, testKubeconfig)
	os.MkdirAll(filepath.Dir(p), 0o755)
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: docker-desktop
  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0EK}
users:
- name: docker-desktop
  user: {client-certificate-data: %s, client-key-data: S0VZCg==}
contexts:
- name: docker-desktop
  context: {cluster: docker-desktop, user: docker-desktop}
current-context: docker-desktop
`, cert)
	if err := os.WriteFile(p, []byte(doc), 0o640); err != nil {
		t.Fatal(err)
	}
}

// kubeDistro is a distro whose default user, me, is this test's own uid
// (no root needed: as root, or any uid, the test is "me", named the
// default in wsl.conf) and has a home.
func kubeDistro(t *testing.T) string {
	t.Helper()
	root := distro(t, "etc", "home/me")
	os.WriteFile(filepath.Join(root, "etc/passwd"), fmt.Appendf(nil, "root:x:0:0:root:/nonexistent:/bin/bash\nme:x:%d:%d::/home/me:/bin/bash\n", os.Geteuid(), os.Getegid()), 0o644)
	os.WriteFile(filepath.Join(root, "etc/wsl.conf"), []byte("[user]\ndefault=me\n"), 0o644)
	return root
}

func kubeLinker(t *testing.T, root, shared string) *Linker {
	k := linker(t, root, shared)
	k.Kubeconfig = testKubeconfig
	return k
}

func userConfig(t *testing.T, root string) []byte {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(root, "home/me/.kube/config"))
	return b
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Ino
}

// The docker-desktop context reaches the default user's kubeconfig on
// the proxy's pass once Kubernetes offers it, is written again only when
// the offer changes (new credentials after a reset), stays when
// Kubernetes goes off, and --uninstall takes out exactly what was merged.
func TestKubeContextFollowsTheOffer(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	root := kubeDistro(t)
	file := filepath.Join(root, "home/me/.kube/config")
	mine := []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod:443}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\nusers:\n- name: me\n  user: {token: t}\ncurrent-context: prod\npreferences: {colors: true}\n")
	os.MkdirAll(filepath.Dir(file), 0o700)
	os.WriteFile(file, mine, 0o600)
	k := kubeLinker(t, root, shared)

	// Kubernetes off: nothing to say, nothing written.
	st, err := k.Reconcile()
	if err != nil || st.Kube != nil || !bytes.Equal(userConfig(t, root), mine) {
		t.Fatalf("no offer: %+v %v", st.Kube, err)
	}

	offerKube(t, shared, "T05FCg==")
	st, err = k.Reconcile()
	if err != nil || st.Kube == nil || st.Kube.User != "me" || st.Kube.File != "/home/me/.kube/config" || len(st.Kube.Merged) != 12 || !st.Kube.Offered || st.Kube.Error != "" {
		t.Fatalf("offered: %+v %v", st.Kube, err)
	}
	merged := userConfig(t, root)
	if !kubeconfig.Merged(merged) || !bytes.Contains(merged, []byte("T05FCg==")) || !bytes.Contains(merged, []byte("current-context: prod")) || !bytes.Contains(merged, []byte("https://prod:443")) {
		t.Fatalf("merged:\n%s", merged)
	}
	states, err := ReadStates(shared, testStates)
	if err != nil || len(states) != 1 || states[0].Kube == nil || states[0].Kube.Merged != st.Kube.Merged {
		t.Fatalf("state read back: %+v %v", states, err)
	}

	// The same offer: the file is not touched again, even once the user
	// took our context out (it stays out until the offer changes).
	ino := inode(t, file)
	if st, err := k.Reconcile(); err != nil || st.Kube.Merged == "" || inode(t, file) != ino {
		t.Fatalf("again: %+v %v", st.Kube, err)
	}
	without, _, _ := kubeconfig.Remove(merged)
	os.WriteFile(file, without, 0o600)
	if _, err := k.Reconcile(); err != nil || !bytes.Equal(userConfig(t, root), without) {
		t.Fatalf("merged again with nothing new: %v", err)
	}

	// A reset: new credentials, merged again.
	offerKube(t, shared, "VFdPCg==")
	st, err = k.Reconcile()
	if b := userConfig(t, root); err != nil || !kubeconfig.Merged(b) || !bytes.Contains(b, []byte("VFdPCg==")) || bytes.Contains(b, []byte("T05FCg==")) {
		t.Fatalf("after a reset: %+v %v\n%s", st.Kube, err, b)
	}

	// Kubernetes off: the context stays, as with Docker Desktop.
	os.Remove(filepath.Join(shared, testKubeconfig))
	kept := userConfig(t, root)
	st, err = k.Reconcile()
	if err != nil || st.Kube == nil || st.Kube.Offered || st.Kube.Merged == "" || !bytes.Equal(userConfig(t, root), kept) {
		t.Fatalf("withdrawn: %+v %v", st.Kube, err)
	}

	// Integration off: ours out, everything else as it was.
	if err := k.Uninstall(); err != nil {
		t.Fatal(err)
	}
	b := userConfig(t, root)
	if kubeconfig.Merged(b) || bytes.Contains(b, []byte("docker-desktop")) || !bytes.Contains(b, []byte("current-context: prod")) || !bytes.Contains(b, []byte("https://prod:443")) || !bytes.Contains(b, []byte("colors: true")) {
		t.Fatalf("after uninstall:\n%s", b)
	}
}

// A user without a kubeconfig gets one, the context current; with
// --cli-tools=false (NoLinks) the context is still merged, no tool
// linked; with the merge off (no Kubeconfig) the home is not touched.
func TestKubeContextForAFreshUser(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	offerKube(t, shared, "T05FCg==")
	root := kubeDistro(t)
	k := kubeLinker(t, root, shared)
	k.NoLinks = true
	st, err := k.Reconcile()
	if err != nil || st.Kube == nil || st.Kube.Merged == "" || len(st.Linked) != 0 {
		t.Fatalf("%+v %+v %v", st, st.Kube, err)
	}
	if b := userConfig(t, root); !bytes.Contains(b, []byte("current-context: docker-desktop")) {
		t.Fatalf("merged:\n%s", b)
	}
	root = kubeDistro(t)
	before := snapshot(t, filepath.Join(root, "home"))
	if st, err := linker(t, root, shared).Reconcile(); err != nil || st.Kube != nil {
		t.Fatalf("merge off: %+v %v", st.Kube, err)
	}
	if after := snapshot(t, filepath.Join(root, "home")); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the homes changed with the merge off:\n%q\n%q", before, after)
	}
}

// A kubeconfig that does not parse is left as it is, with one warning
// (not one every 5 seconds) and the reason in the state; once the user
// mends it, the next pass merges.
func TestKubeUnparseableFileIsLeftAlone(t *testing.T) {
	shared := t.TempDir()
	offer(t, shared)
	offerKube(t, shared, "T05FCg==")
	root := kubeDistro(t)
	file := filepath.Join(root, "home/me/.kube/config")
	os.MkdirAll(filepath.Dir(file), 0o700)
	bad := []byte("clusters:\n\t- broken\n")
	os.WriteFile(file, bad, 0o600)
	log, hook := test.NewNullLogger()
	k := kubeLinker(t, root, shared)
	k.Log = log
	for range 3 {
		st, err := k.Reconcile()
		if err != nil || st.Kube == nil || !strings.Contains(st.Kube.Error, "does not parse") || st.Kube.Merged != "" {
			t.Fatalf("%+v %v", st.Kube, err)
		}
	}
	if !bytes.Equal(userConfig(t, root), bad) {
		t.Fatal("an unparseable kubeconfig was rewritten")
	}
	warnings := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warnings++
		}
	}
	if warnings != 1 {
		t.Fatalf("%d warnings over three passes", warnings)
	}
	os.WriteFile(file, []byte("apiVersion: v1\n"), 0o600)
	if st, err := k.Reconcile(); err != nil || st.Kube.Error != "" || st.Kube.Merged == "" || !kubeconfig.Merged(userConfig(t, root)) {
		t.Fatalf("mended: %+v %v", st.Kube, err)
	}
}

// What another distro's root can plant in the shared tmpfs: a symlink
// on the way to the offer (never followed), an offer naming a server
// elsewhere or a program for kubectl to run (refused): nothing reaches
// the user's kubeconfig.
func TestKubeOfferAttacks(t *testing.T) {
	elsewhere := t.TempDir()
	offerKube(t, elsewhere, "T05FCg==")
	for name, plant := range map[string]func(shared string){
		"a symlinked folder": func(shared string) {
			os.MkdirAll(filepath.Join(shared, "docker-desktop"), 0o755)
			os.Symlink(filepath.Join(elsewhere, "docker-desktop/kubernetes"), filepath.Join(shared, "docker-desktop/kubernetes"))
		},
		"a symlinked file": func(shared string) {
			os.MkdirAll(filepath.Join(shared, "docker-desktop/kubernetes"), 0o755)
			os.Symlink(filepath.Join(elsewhere, testKubeconfig), filepath.Join(shared, testKubeconfig))
		},
		"a server elsewhere": func(shared string) {
			offerKube(t, shared, "T05FCg==")
			b, _ := os.ReadFile(filepath.Join(shared, testKubeconfig))
			os.WriteFile(filepath.Join(shared, testKubeconfig), bytes.Replace(b, []byte("127.0.0.1"), []byte("evil.example.com"), 1), 0o640)
		},
		"an exec plugin": func(shared string) {
			offerKube(t, shared, "T05FCg==")
			b, _ := os.ReadFile(filepath.Join(shared, testKubeconfig))
			os.WriteFile(filepath.Join(shared, testKubeconfig), bytes.Replace(b, []byte("{client-certificate-data: T05FCg==, client-key-data: S0VZCg==}"), []byte("{exec: {command: /tmp/evil}}"), 1), 0o640)
		},
		"a FIFO": func(shared string) {
			os.MkdirAll(filepath.Join(shared, "docker-desktop/kubernetes"), 0o755)
			syscall.Mkfifo(filepath.Join(shared, testKubeconfig), 0o640)
		},
	} {
		shared := t.TempDir()
		offer(t, shared)
		plant(shared)
		root := kubeDistro(t)
		st, err := kubeLinker(t, root, shared).Reconcile()
		if err != nil || st.Kube == nil || st.Kube.Error == "" || st.Kube.Merged != "" {
			t.Errorf("%s: %+v %v", name, st.Kube, err)
		}
		if _, err := os.Lstat(filepath.Join(root, "home/me/.kube")); err == nil {
			t.Errorf("%s: written to the user's kubeconfig", name)
		}
		t.Logf("%s: %s", name, st.Kube.Error)
	}
}

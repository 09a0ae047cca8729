package kube

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/services"
)

// fakeTree is a Kubernetes image's tree with every file ReadManifest
// asks for.
func fakeTree(t *testing.T) string {
	tree := t.TempDir()
	for _, f := range []string{"usr/bin/kube", "images/pause.tar", "usr/lib/cni/bridge", "usr/lib/cni/host-local", "usr/lib/cni/portmap", "usr/lib/cni/loopback"} {
		os.MkdirAll(filepath.Join(tree, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(tree, f), []byte("x"), 0o755)
	}
	os.WriteFile(filepath.Join(tree, "kubernetes.json"), []byte(`{"name": "k", "pauseImage": "ddinit.internal/pause:1.37.2", "components": [{"name": "kubelet", "version": "1.37.2"}]}`), 0o644)
	return tree
}

// An image that lacks a part, or names no usable pause image, is
// refused, naming what.
func TestReadManifestRefusesAnIncompleteImage(t *testing.T) {
	tree := fakeTree(t)
	m, err := ReadManifest(tree)
	if err != nil || m.PauseImage != "ddinit.internal/pause:1.37.2" || m.Version("kubelet") != "1.37.2" {
		t.Fatalf("a complete image: %+v %v", m, err)
	}
	os.Remove(filepath.Join(tree, "usr/lib/cni/portmap"))
	if _, err := ReadManifest(tree); err == nil || !strings.Contains(err.Error(), "usr/lib/cni/portmap") {
		t.Fatalf("no portmap: %v", err)
	}
	for _, doc := range []string{`{`, `{"pauseImage": ""}`, `{"pauseImage": "a\"b"}`} {
		tree := fakeTree(t)
		os.WriteFile(filepath.Join(tree, "kubernetes.json"), []byte(doc), 0o644)
		if _, err := ReadManifest(tree); err == nil {
			t.Errorf("%s: accepted", doc)
		}
	}
}

// Prepare writes every file the services' arguments name, and a second
// start keeps them as they are; every service has a readiness probe and
// comes after what it depends on.
func TestPrepareWritesWhatTheServicesName(t *testing.T) {
	tree, dir := fakeTree(t), t.TempDir()
	m, _ := ReadManifest(tree)
	c := &Cluster{Tree: tree, Dir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), NodeIP: net.ParseIP("100.64.249.2").To4(), Containerd: "/run/containerd/containerd.sock", CgroupV1: true, Manifest: m}
	if _, _, err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	defs := c.Definitions()
	if _, err := services.StartOrder(defs); err != nil {
		t.Fatal(err)
	}
	if len(defs) != len(Components) {
		t.Fatalf("%d services, want %d", len(defs), len(Components))
	}
	for _, d := range defs {
		if d.Ready == nil || d.Setting != Setting || d.Required {
			t.Errorf("%s: ready %v, setting %q, required %v", d.Name, d.Ready, d.Setting, d.Required)
		}
		if d.Spec.Process.Args[0] != filepath.Join(tree, "usr/bin/kube") || d.Spec.Process.Args[1] != d.Name {
			t.Errorf("%s runs %v", d.Name, d.Spec.Process.Args[:2])
		}
		for _, a := range d.Spec.Process.Args[2:] {
			_, v, ok := strings.Cut(a, "=")
			if !ok {
				v = a
			}
			if strings.HasPrefix(v, c.Dir) && !strings.HasSuffix(v, "/etcd") {
				if _, err := os.Stat(v); err != nil {
					t.Errorf("%s names %s: %v", d.Name, v, err)
				}
			}
		}
	}
	// kube-proxy leaves the kernel's conntrack table size alone: it
	// cannot change it outside the first network namespace.
	for _, d := range defs {
		if d.Name == Proxy && !strings.Contains(strings.Join(d.Spec.Process.Args, " "), "--conntrack-max-per-core=0") {
			t.Errorf("kube-proxy would set nf_conntrack_max: %v", d.Spec.Process.Args)
		}
	}
	var kubelet map[string]any
	b, _ := os.ReadFile(c.config("kubelet.yaml"))
	if err := json.Unmarshal(b, &kubelet); err != nil || kubelet["failCgroupV1"] != false || kubelet["address"] != "100.64.249.2" {
		t.Fatalf("kubelet's configuration: %v %s", err, b)
	}
	info, _ := os.Stat(c.config("admin.conf"))
	if _, _, err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Stat(c.config("admin.conf")); !again.ModTime().Equal(info.ModTime()) {
		t.Fatal("a second start wrote the admin kubeconfig again")
	}
	if cri := c.CRI(); cri.SandboxImage != m.PauseImage || cri.CNIConfDir != filepath.Join(c.RunDir, "net.d") {
		t.Fatalf("CRI: %+v", cri)
	}
}

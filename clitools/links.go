package clitools

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// The default PATH of a login shell in the distros WSL ships (Ubuntu's
// /etc/environment, snap's /snap/bin included; Debian's and Alpine's
// profiles): where a docker or a kubectl of the user's would be found
// before or instead of ddinit's.
var defaultPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/games", "/usr/local/games", "/snap/bin"}

// The folders the docker CLI looks for plugins in (besides each user's
// ~/.docker/cli-plugins), in its order.
var systemPluginDirs = []string{"/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins"}

// tool is one link ddinit may make in a distro.
type tool struct {
	name   string // for the state and the log
	link   string // where the link goes in the distro
	target string // what it points to, below the shared copy's current
	// theirs are where a copy of the user's would be found (the link's
	// own path among them): any of them there and not ddinit's keeps the
	// link away.
	theirs []string
	// onlyInExisting: the link is made only where its folder exists (a
	// completion where the distro has a shell that reads them).
	onlyInExisting bool
	// optional: an offer may not carry it (kubectl, in images older than
	// it): linked only when its target is there, and a link of ddinit's
	// removed when the offer no longer carries it (it would lead nowhere).
	optional bool
}

// Linker makes the CLI tools usable in one distro, as `ddinit proxy` runs
// there: links into the shared copy, never over or before the user's own.
type Linker struct {
	// Root is the distro's root, "/" but in tests: every path in the
	// distro is below it.
	Root string
	// Shared is the shared tmpfs, as the distro sees it; Folder the tools'
	// folder below it, and States the folder of the distros' state files.
	Shared, Folder, States string
	Distro                 string
	// Version is the proxy's own (ddinit's), written in the state.
	Version string
	Log     logrus.FieldLogger
	// Now is time.Now but in tests.
	Now func() time.Time
	// NoLinks: no tool is linked (--cli-tools=false); the kubeconfig is
	// still kept when Kubeconfig is set.
	NoLinks bool
	// Kubeconfig is where, below Shared, ddinit run offers the cluster's
	// kubeconfig while Kubernetes runs (config.SharedKubeconfig): its
	// docker-desktop context is merged into the default user's
	// ~/.kube/config. "": none is.
	Kubeconfig string

	// said remembers what was logged, so a check that finds the same
	// again says nothing.
	said map[string]bool
	// kube is what the kubeconfig's passes found and did.
	kube kubeMemory
}

// State is what a distro's proxy linked and left alone, as it writes it to
// the shared tmpfs for `ddinit status`.
type State struct {
	Distro string `json:"distro"`
	// Ddinit is the version of the proxy that wrote it.
	Ddinit string `json:"ddinit,omitempty"`
	// Tools names the tools offered when the links were made
	// ("docker 29.10.0, …"); empty when none were offered.
	Tools     string      `json:"tools,omitempty"`
	Linked    []string    `json:"linked,omitempty"`
	LeftAlone []LeftAlone `json:"leftAlone,omitempty"`
	// Kube is what became of the docker-desktop context (nil: Kubernetes
	// has not been on while this proxy ran, or the merge is off).
	Kube    *KubeState `json:"kubeconfig,omitempty"`
	Checked time.Time  `json:"checked"`
}

// LeftAlone is a tool of the user's that keeps ddinit's link away.
type LeftAlone struct {
	Tool string `json:"tool"`
	Path string `json:"path"`
}

func (k *Linker) tools() []tool {
	docker := onPath("docker", dockerBinary)
	kubectl := onPath("kubectl", kubectlBinary)
	kubectl.optional = true
	list := []tool{docker, kubectl}
	for _, p := range plugins {
		t := tool{name: p, link: filepath.Join(systemPluginDirs[0], p), target: pluginsDir + "/" + p}
		for _, dir := range append(k.userPluginDirs(), systemPluginDirs...) {
			t.theirs = append(t.theirs, filepath.Join(dir, p))
		}
		list = append(list, t)
	}
	return append(list,
		tool{name: "bash completion", link: "/usr/share/bash-completion/completions/docker", target: "completion/bash/docker",
			theirs: []string{"/usr/share/bash-completion/completions/docker", "/etc/bash_completion.d/docker"}, onlyInExisting: true},
		tool{name: "zsh completion", link: "/usr/share/zsh/vendor-completions/_docker", target: "completion/zsh/_docker",
			theirs: []string{"/usr/share/zsh/vendor-completions/_docker", "/usr/share/zsh/site-functions/_docker", "/usr/local/share/zsh/site-functions/_docker"}, onlyInExisting: true},
		tool{name: "fish completion", link: "/usr/share/fish/vendor_completions.d/docker.fish", target: "completion/fish/docker.fish",
			theirs: []string{"/usr/share/fish/vendor_completions.d/docker.fish", "/usr/share/fish/completions/docker.fish"}, onlyInExisting: true},
	)
}

// onPath is a program linked into /usr/local/bin, kept away by one of the
// user's in any folder of the default PATH.
func onPath(name, target string) tool {
	t := tool{name: name, link: filepath.Join("/usr/local/bin", name), target: target}
	for _, dir := range defaultPath {
		t.theirs = append(t.theirs, filepath.Join(dir, name))
	}
	return t
}

// carried reports whether the offer holds t's target.
func (k *Linker) carried(t tool) bool {
	_, err := os.Stat(k.want(t))
	return err == nil
}

// userPluginDirs are root's and each /home user's ~/.docker/cli-plugins.
func (k *Linker) userPluginDirs() []string {
	dirs := []string{"/root/.docker/cli-plugins"}
	homes, _ := os.ReadDir(k.path("/home"))
	for _, h := range homes {
		if h.IsDir() {
			dirs = append(dirs, filepath.Join("/home", h.Name(), ".docker/cli-plugins"))
		}
	}
	return dirs
}

// path is a distro path below Root.
func (k *Linker) path(p string) string { return filepath.Join(k.Root, p) }

// current is the shared copy's current version, as the links name it.
func (k *Linker) current() string { return filepath.Join(k.Shared, k.Folder, Current) }

// want is what t's link points to.
func (k *Linker) want(t tool) string { return filepath.Join(k.current(), t.target) }

// ours reports whether the file at the distro path p is t's link as
// ddinit makes it: at t's place, to exactly t's target. A link of the
// user's into the shared copy (a version pinned, a path through it) is
// the user's.
func (k *Linker) ours(t tool, p string) bool {
	target, err := os.Readlink(k.path(p))
	return err == nil && p == t.link && target == k.want(t)
}

// theirs is the first of t's places holding something that is not
// ddinit's link ("" when none).
func (k *Linker) theirs(t tool) string {
	for _, p := range t.theirs {
		if _, err := os.Lstat(k.path(p)); err == nil && !k.ours(t, p) {
			return p
		}
	}
	return ""
}

// Reconcile makes the links that are missing, removes each that a tool of
// the user's came to shadow, and returns (and writes) the distro's state.
// With nothing offered in the shared tmpfs, links made before are kept
// (the offer comes back when ddinit run does) and none is made.
func (k *Linker) Reconcile() (State, error) {
	st := State{Distro: k.Distro, Ddinit: k.Version, Checked: k.now()}
	m, err := ReadManifest(k.current())
	offered := err == nil
	if offered {
		st.Tools = m.Summary()
	}
	var errs []error
	tools := k.tools()
	if k.NoLinks {
		tools = nil
	}
	for _, t := range tools {
		if offered && t.optional && !k.carried(t) {
			if k.ours(t, t.link) {
				errs = append(errs, k.unlink(t.link))
			}
			continue
		}
		if p := k.theirs(t); p != "" {
			st.LeftAlone = append(st.LeftAlone, LeftAlone{Tool: t.name, Path: p})
			k.once("left:"+p, func() {
				k.Log.WithFields(logrus.Fields{"tool": t.name, "path": p}).Info("the distro has its own: left alone, no link made")
			})
			if k.ours(t, t.link) {
				errs = append(errs, k.unlink(t.link))
			}
			continue
		}
		want := k.want(t)
		if k.ours(t, t.link) {
			st.Linked = append(st.Linked, t.link)
			continue
		}
		if !offered {
			continue
		}
		dir := filepath.Dir(t.link)
		if _, err := os.Stat(k.path(dir)); t.onlyInExisting && err != nil {
			continue
		}
		err := k.mkdirAll(dir)
		if err == nil {
			err = k.link(want, t.link)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", t.name, err))
			continue
		}
		st.Linked = append(st.Linked, t.link)
		k.Log.WithFields(logrus.Fields{"tool": t.name, "link": t.link}).Info("CLI tool linked")
	}
	st.Kube = k.reconcileKube()
	errs = append(errs, k.writeState(st))
	return st, errors.Join(errs...)
}

// Uninstall removes every link of ddinit's and the folders it made for
// them when they are empty, the docker-desktop cluster, user and context
// it merged into its users' kubeconfigs (with Kubeconfig set), and the
// distro's state file: integration turned off. Nothing else in the
// distro changes.
func (k *Linker) Uninstall() error {
	var errs []error
	for _, t := range k.tools() {
		if k.ours(t, t.link) {
			errs = append(errs, k.unlink(t.link))
		}
	}
	// The folders ddinit made, known by the mark it left in each (in the
	// distro's own file system: nothing another distro can write),
	// deepest first, and only while empty but for the mark.
	dirs := k.linkFolders()
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, dir := range dirs {
		mark := k.path(filepath.Join(dir, madeMark))
		if info, err := os.Lstat(mark); err != nil || !info.Mode().IsRegular() {
			continue
		}
		if entries, err := os.ReadDir(k.path(dir)); err != nil || len(entries) != 1 {
			continue // the user's now too: kept, mark and all
		}
		if err := os.Remove(mark); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(dir, madeMark), err))
			continue
		}
		os.Remove(k.path(dir)) // refused if something came in meanwhile
	}
	k.uninstallKube()
	errs = append(errs, k.removeState())
	return errors.Join(errs...)
}

// madeMark is the file ddinit leaves in each folder it made for a link,
// so that Uninstall removes those and no other.
const madeMark = ".ddinit-made"

// linkFolders are the folders ddinit may have made for its links: each
// link's folder and those above it, up to /usr.
func (k *Linker) linkFolders() []string {
	var dirs []string
	for _, t := range k.tools() {
		for d := filepath.Dir(t.link); d != "/" && d != "/usr" && d != "."; d = filepath.Dir(d) {
			dirs = appendNew(dirs, d)
		}
	}
	return dirs
}

// link puts a link to target at the distro path p in one rename.
func (k *Linker) link(target, p string) error {
	tmp := k.path(filepath.Join(filepath.Dir(p), ".ddinit-"+filepath.Base(p)))
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, k.path(p)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func (k *Linker) unlink(p string) error {
	if err := os.Remove(k.path(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the link %s: %w", p, err)
	}
	k.Log.WithField("link", p).Info("CLI tool link removed")
	return nil
}

// mkdirAll makes the distro folder dir and those above it that are
// missing, each with ddinit's mark in it.
func (k *Linker) mkdirAll(dir string) error {
	var missing []string
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if _, err := os.Lstat(k.path(d)); err == nil {
			break
		}
		missing = append(missing, d)
	}
	slices.Reverse(missing)
	for _, d := range missing {
		if err := os.Mkdir(k.path(d), 0o755); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue // made meanwhile, not by ddinit
			}
			return fmt.Errorf("make %s: %w", d, err)
		}
		if err := os.WriteFile(k.path(filepath.Join(d, madeMark)), nil, 0o644); err != nil {
			return fmt.Errorf("mark %s as ddinit's: %w", d, err)
		}
	}
	return nil
}

func (k *Linker) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

func (k *Linker) once(key string, f func()) {
	if k.said == nil {
		k.said = map[string]bool{}
	}
	if !k.said[key] {
		k.said[key] = true
		f()
	}
}

func appendNew(list []string, more ...string) []string {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

// checkEvery is how often a distro's links are checked again: a link
// removed comes back, a docker of the user's installed since pushes
// ddinit's away, a new offer is taken up.
const checkEvery = 5 * time.Second

// Keep reconciles the links now and every checkEvery until ctx ends.
func (k *Linker) Keep(ctx context.Context) {
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		if _, err := k.Reconcile(); err != nil {
			k.once("error:"+err.Error(), func() { k.Log.WithError(err).Warn("the CLI tools' links") })
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

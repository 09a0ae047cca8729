package distroproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/internal/testutil"

	"github.com/ddinit/ddinit/mounts"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// fakeEngine answers a Follower's requests: the containers it holds
// (id → labels), each running.
type fakeEngine struct {
	mu         sync.Mutex
	containers map[string]map[string]string
}

func (e *fakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r.URL.Path == "/containers/json" {
		type c struct {
			ID     string            `json:"Id"`
			Labels map[string]string `json:"Labels"`
		}
		list := []c{}
		for id, labels := range e.containers {
			list = append(list, c{id, labels})
		}
		json.NewEncoder(w).Encode(list)
		return
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/containers/"); ok && strings.HasSuffix(id, "/json") {
		if _, ok := e.containers[strings.TrimSuffix(id, "/json")]; ok {
			w.Write([]byte(`{"State":{"Running":true}}`))
			return
		}
	}
	http.NotFound(w, r)
}

func (e *fakeEngine) set(containers map[string]map[string]string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.containers = containers
}

// follower follows a fake engine for the distro's binds b.
func follower(t *testing.T, b *Binds, e *fakeEngine) *Follower {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	return &Follower{Binds: b, Engine: engineclient.New(dial), Log: b.Log}
}

// label is a container's label naming the binds of sources (engine path →
// source).
func label(t *testing.T, b *Binds, sources ...string) map[string]string {
	m := map[string]string{}
	for _, s := range sources {
		m[b.enginePath(id(s))] = s
	}
	j, _ := json.Marshal(m)
	return map[string]string{LabelBinds: string(j)}
}

// mountedAt reports whether the mount table has a mount at point.
func mountedAt(t *testing.T, point string) bool {
	t.Helper()
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range table {
		if m.Point == point {
			return true
		}
	}
	return false
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An earlier run of the proxy left binds in the distro's folder, then
// ended; some of their containers were removed meanwhile. When the proxy
// comes back and reaches the engine, the binds of the containers that
// exist are kept and tracked (even one whose source can no longer be
// bound again), the others are unmounted and their points removed,
// folders and files alike. Another distro's binds, the same sources
// included, and whatever in the folder is not a bind the proxy made are
// left alone, and the latter logged once. A bind this run has handed out
// for a create not answered yet is kept for its grace.
func TestLeftoverBindsOfGoneContainersAreTakenDown(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	src := t.TempDir()
	kept, gone, goneFile, moved, handed := filepath.Join(src, "kept"), filepath.Join(src, "gone"), filepath.Join(src, "gone.txt"), filepath.Join(src, "moved", "src"), filepath.Join(src, "handed")
	for _, p := range []string{kept + "/f", gone + "/f", goneFile, moved + "/f", handed + "/f"} {
		mustWrite(t, p, p)
	}

	earlier := &Binds{Distro: "Ubuntu", Shared: shared, Log: quietLog()}
	for _, s := range []string{kept, gone, goneFile, moved} {
		if _, err := earlier.Ensure(s, false); err != nil {
			t.Fatal(err)
		}
	}
	debian := &Binds{Distro: "Debian", Shared: shared, Log: quietLog()}
	for _, s := range []string{gone, goneFile} {
		if _, err := debian.Ensure(s, false); err != nil {
			t.Fatal(err)
		}
	}
	folder := filepath.Join(shared, BindsDir, "Ubuntu")
	debianFolder := filepath.Join(shared, BindsDir, "Debian")
	point := func(source string) string { return filepath.Join(folder, id(source)) }
	// What is in the folder and not a bind the proxy made.
	strays := map[string]string{
		"notes.txt":        "a file",
		"0123456789abcdef": "a folder named like a bind, not a mount",
		"fedcba9876543210": "a symlink named like a bind, to another distro's bind",
		"Not-A-Bind":       "a mount not named like a bind",
	}
	mustWrite(t, filepath.Join(folder, "notes.txt"), "mine")
	os.Mkdir(filepath.Join(folder, "0123456789abcdef"), 0o755)
	if err := os.Symlink(filepath.Join(debianFolder, id(gone)), filepath.Join(folder, "fedcba9876543210")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(folder, "Not-A-Bind"), 0o755)
	if err := unix.Mount("tmpfs", filepath.Join(folder, "Not-A-Bind"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	// The earlier run's bind of moved stays on the folder that was there;
	// the path now names a file, so it cannot be bound again.
	if err := os.Rename(filepath.Dir(moved), filepath.Dir(moved)+".old"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Dir(moved), "now a file")

	// The proxy again, which hands out a bind before the engine answers.
	logger, hook := test.NewNullLogger()
	b := &Binds{Distro: "Ubuntu", Shared: shared, Log: logger, Grace: time.Hour}
	if _, err := b.Ensure(handed, false); err != nil {
		t.Fatal(err)
	}
	engine := &fakeEngine{}
	engine.set(map[string]map[string]string{
		"kept-container":  label(t, b, kept),
		"moved-container": label(t, b, moved),
		// Another distro's container binds the same sources.
		"debian-container": label(t, debian, gone, goneFile),
	})
	f := follower(t, b, engine)
	for range 2 { // at the start, and once the engine comes back
		if err := f.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	for _, s := range []string{gone, goneFile} {
		if mountedAt(t, point(s)) {
			t.Errorf("the bind of %s, whose container is gone, is still mounted", s)
		}
		if _, err := os.Lstat(point(s)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the point of %s, whose container is gone, is still there: %v", s, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(debianFolder, id(gone), "f")); err != nil || string(got) != gone+"/f" {
		t.Errorf("another distro's bind of %s: %q %v", gone, got, err)
	}
	if got, err := os.ReadFile(filepath.Join(debianFolder, id(goneFile))); err != nil || string(got) != goneFile {
		t.Errorf("another distro's bind of %s: %q %v", goneFile, got, err)
	}
	for _, s := range []string{kept, moved, handed} {
		if got, err := os.ReadFile(filepath.Join(point(s), "f")); err != nil || string(got) != s+"/f" {
			t.Errorf("the bind of %s, which a container uses or a create may, through its point: %q %v", s, got, err)
		}
		if b.Sources()[b.enginePath(id(s))] != s {
			t.Errorf("the bind of %s is not tracked: %v", s, b.Sources())
		}
	}
	for name, what := range strays {
		if _, err := os.Lstat(filepath.Join(folder, name)); err != nil {
			t.Errorf("%s (%s) was removed: %v", name, what, err)
		}
		n := 0
		for _, e := range hook.AllEntries() {
			if e.Data["bind"] == name && strings.Contains(e.Message, "left alone") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s (%s) was logged %d times over two resyncs, want once", name, what, n)
		}
	}
	if !mountedAt(t, filepath.Join(folder, "Not-A-Bind")) {
		t.Error("a mount not named like a bind was taken down")
	}

	// Kept binds are tracked: each goes with its last container.
	f.handle(destroyed("kept-container"))
	f.handle(destroyed("moved-container"))
	for _, s := range []string{kept, moved} {
		if mountedAt(t, point(s)) {
			t.Errorf("the bind of %s kept from an earlier run outlived its container", s)
		}
	}
	if !mountedAt(t, point(handed)) {
		t.Error("a bind handed out for a create was taken down within its grace")
	}
}

func destroyed(container string) engineclient.Event {
	var ev engineclient.Event
	ev.Action, ev.Actor.ID = "destroy", container
	return ev
}

// A create the earlier run handed a bind out for, which the engine ends
// after this run took the bind down (its container did not exist yet):
// the create event makes the bind again, and it is tracked. So is one
// whose grace passed before the create ended; a label that does not
// match its bind makes nothing.
func TestCreateEventMakesAGoneBindAgain(t *testing.T) {
	shared := testutil.InWSLMounts(t)
	if shared == "" {
		return
	}
	src := t.TempDir()
	late, other := filepath.Join(src, "late"), filepath.Join(src, "other")
	mustWrite(t, late+"/f", "late")
	mustWrite(t, other+"/f", "other")
	earlier := &Binds{Distro: "Ubuntu", Shared: shared, Log: quietLog()}
	if _, err := earlier.Ensure(late, false); err != nil {
		t.Fatal(err)
	}
	b := &Binds{Distro: "Ubuntu", Shared: shared, Log: quietLog(), Grace: time.Hour}
	f := follower(t, b, &fakeEngine{})
	if err := f.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	point := filepath.Join(shared, BindsDir, "Ubuntu", id(late))
	if mountedAt(t, point) {
		t.Fatal("a leftover bind no container uses was kept")
	}

	var ev engineclient.Event
	ev.Action, ev.Actor.ID, ev.Actor.Attributes = "create", "late-container", label(t, b, late)
	f.handle(ev)
	if got, err := os.ReadFile(filepath.Join(point, "f")); err != nil || string(got) != "late" {
		t.Fatalf("the bind of a container created late, through its point: %q %v", got, err)
	}
	// Tracked: a sweep leaves it (a container uses it), its container's
	// removal takes it down.
	b.Grace = time.Nanosecond
	b.Sweep()
	if !mountedAt(t, point) {
		t.Fatal("a bind a container uses was swept")
	}
	f.handle(destroyed("late-container"))
	if mountedAt(t, point) {
		t.Fatal("the bind made again outlived its container")
	}

	// A label naming other's bind with late's path is not trusted.
	forged := map[string]string{b.enginePath(id(other)): late}
	j, _ := json.Marshal(forged)
	ev.Actor.ID, ev.Actor.Attributes = "forged", map[string]string{LabelBinds: string(j)}
	f.handle(ev)
	for _, s := range []string{late, other} {
		if mountedAt(t, filepath.Join(shared, BindsDir, "Ubuntu", id(s))) {
			t.Errorf("a forged label made the bind of %s", s)
		}
	}
}

// One proxy per distro: while one holds the distro's folder a second is
// refused, saying so; another distro's is not; once the first ends, the
// folder can be taken again.
func TestOneProxyPerDistro(t *testing.T) {
	shared := t.TempDir()
	first := &Binds{Distro: "Ubuntu", Shared: shared, Log: quietLog()}
	release, err := first.Claim()
	if err != nil {
		t.Fatal(err)
	}
	second := &Binds{Distro: "Ubuntu", Shared: shared, Log: quietLog()}
	if _, err := second.Claim(); err == nil || !strings.Contains(err.Error(), "another ddinit proxy serves the distro \"Ubuntu\"") {
		t.Fatalf("a second proxy for the distro: %v", err)
	}
	if rel, err := (&Binds{Distro: "Debian", Shared: shared, Log: quietLog()}).Claim(); err != nil {
		t.Fatalf("another distro's proxy: %v", err)
	} else {
		rel()
	}
	release()
	again, err := second.Claim()
	if err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
	again()
}

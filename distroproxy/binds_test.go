package distroproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/sirupsen/logrus"
)

func TestBindPolicy(t *testing.T) {
	const shared = "/mnt/wsl"
	for _, c := range []struct {
		real    string
		skip    []string
		refused bool
	}{
		{real: "/home/me/project"},
		{real: "/mnt/wslg"},   // a sibling whose name starts the same
		{real: "/mnt/wsl2/x"}, // likewise
		{real: "/", skip: []string{shared}},
		{real: "/mnt", skip: []string{shared}},
		{real: shared, refused: true},
		{real: shared + "/docker-desktop-bind-mounts/Ubuntu/0123456789abcdef", refused: true},
		{real: shared + "/x", refused: true},
	} {
		skip, err := BindPolicy(c.real, shared)
		if (err != nil) != c.refused || fmt.Sprint(skip) != fmt.Sprint(c.skip) {
			t.Errorf("%s: skip %v, error %v", c.real, skip, err)
		}
		if err != nil && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "every WSL distro shares")) {
			t.Errorf("%s: the refusal does not say why: %v", c.real, err)
		}
	}
}

func TestValidDistro(t *testing.T) {
	for _, name := range []string{"Ubuntu", "Ubuntu-22.04", "my_distro", "Debian.12"} {
		if err := ValidDistro(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "/", `a\b`, "a\x00", ".hidden", strings.Repeat("d", maxDistroName+1)} {
		if err := ValidDistro(name); err == nil {
			t.Errorf("%.20q… was accepted", name)
		}
	}
}

// Every name ValidDistro accepts names a state file the distro's proxy
// can write and ddinit status lists: the longest too (its temporary
// name is longer still).
func TestValidDistroNamesAStateFile(t *testing.T) {
	shared := t.TempDir()
	names := []string{strings.Repeat("d", maxDistroName), "Ubuntu-22.04", "a.b"}
	for _, name := range names {
		if err := ValidDistro(name); err != nil {
			t.Fatalf("%.20q…: %v", name, err)
		}
		k := &clitools.Linker{Root: t.TempDir(), Shared: shared, Folder: config.SharedCLITools, States: config.SharedDistroStates, Distro: name, Log: logrus.New()}
		if _, err := k.Reconcile(); err != nil {
			t.Errorf("%.20q…: %v", name, err)
		}
	}
	states, err := clitools.ReadStates(shared, config.SharedDistroStates)
	if err != nil || len(states) != len(names) {
		t.Fatalf("ddinit status would list %d distros of %d (%v)", len(states), len(names), err)
	}
}

func TestDistroPathFromALabel(t *testing.T) {
	b := &Binds{Distro: "Ubuntu"}
	for src, want := range map[string]string{
		"/home/me/p":               "/home/me/p",
		`\\wsl$\Ubuntu\home\me\p`:  "/home/me/p",
		`\\wsl$\ubuntu\home\me\p`:  "/home/me/p",
		`\\wsl$\Debian\home\me\p`:  "",
		`C:\Users\me`:              "",
		`home/me`:                  "",
		`\\wsl.localhost\Ubuntu\x`: "/x",
	} {
		got, ok := b.distroPath(src)
		if (want != "") != ok || ok && got != want {
			t.Errorf("%s: %q %v, want %q", src, got, ok, want)
		}
	}
}

// A bind service that answers fast: the client to it keeps no
// connection, goroutine or descriptor per call; an answer that is not one
// of the asked distro's binds is refused.
func TestWSLPathsClientIsShared(t *testing.T) {
	shared := t.TempDir()
	sock := ServiceSocket(shared, "Ubuntu")
	os.MkdirAll(filepath.Dir(sock), 0o755)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	answer := EngineBinds + "/Ubuntu/0123456789abcdef"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req bindRequest
		json.NewDecoder(r.Body).Decode(&req)
		if req.Path == "/evil" {
			json.NewEncoder(w).Encode(bindAnswer{Source: "/"})
			return
		}
		json.NewEncoder(w).Encode(bindAnswer{Source: answer})
	})}
	var conns atomic.Int64
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	go srv.Serve(l)
	defer srv.Close()
	w := NewWSLPaths(shared)
	translate := func() {
		dst, ok, err := w.Translate(`\\wsl$\Ubuntu\home\me`, dockerproxy.FromBinds)
		if err != nil || !ok || dst != answer {
			t.Fatalf("%q %v %v", dst, ok, err)
		}
	}
	translate() // the first connection, kept idle
	time.Sleep(50 * time.Millisecond)
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	for range 200 {
		translate()
	}
	time.Sleep(50 * time.Millisecond)
	if g, f := runtime.NumGoroutine(), openFDs(t); g > goroutines+4 || f > fds+4 {
		t.Fatalf("200 translations: goroutines %d → %d, descriptors %d → %d", goroutines, g, fds, f)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("201 translations made %d connections to the service, not one kept", n)
	}
	if dst, ok, err := w.Translate(`\\wsl$\ubuntu\home\me`, dockerproxy.FromBinds); err != nil || !ok || dst != answer {
		t.Fatalf("the distro's name in another case: %q %v %v", dst, ok, err)
	}
	if _, _, err := w.Translate(`\\wsl$\Ubuntu\evil`, dockerproxy.FromBinds); err == nil || !strings.Contains(err.Error(), "not one of its binds") {
		t.Fatalf("an answer outside the distro's binds: %v", err)
	}
	if _, _, err := w.Translate(`\\wsl$\Nope\x`, dockerproxy.FromBinds); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("a distro without a proxy: %v", err)
	}
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// A bind handed out again while its last container is being forgotten
// stays until the new create names its container; one whose create never
// names a container is swept after the grace. In a synctest bubble: the
// grace is the bubble's time, which a loaded machine does not stretch.
func TestBindHeldFromHandOutToCreate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &Binds{Distro: "Ubuntu", Shared: t.TempDir(), Log: quietLog(), Grace: time.Hour}
		path := b.enginePath("0123456789abcdef")
		b.made = map[string]*bind{"0123456789abcdef": {source: "/p", users: map[string]bool{}, holds: 1, handedOut: time.Now()}}
		b.Use("old", []string{path})
		b.mu.Lock()
		b.made["0123456789abcdef"].holds++ // handed out again, for "new"
		b.mu.Unlock()
		b.Forget("old")
		if len(b.Sources()) != 1 {
			t.Fatal("taken down while a create it was handed out for is pending")
		}
		b.Use("new", []string{path})
		b.Forget("new")
		if len(b.Sources()) != 0 {
			t.Fatal("kept after its last container went")
		}

		b.Grace = 10 * time.Millisecond
		b.made = map[string]*bind{"fedcba9876543210": {source: "/q", users: map[string]bool{}, holds: 1, handedOut: time.Now()}}
		b.Sweep()
		if len(b.Sources()) != 1 {
			t.Fatal("swept within the grace")
		}
		time.Sleep(20 * time.Millisecond)
		b.Sweep()
		if len(b.Sources()) != 0 {
			t.Fatal("a bind whose create never came was not swept")
		}
	})
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

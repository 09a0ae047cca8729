package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/sirupsen/logrus"
)

// fakeEngine plays dockerd: it "starts" on the daemon.json in place and
// refuses one that sets a key it does not know.
type fakeEngine struct {
	daemonPath  string
	mu          sync.Mutex
	restarts    int
	running     []byte // the daemon.json the running dockerd read
	switched    map[string]bool
	switchErr   error       // what Switch answers
	env         Environment // set for the next start
	runningEnv  Environment // the running dockerd's
	idleChanges int
}

func (e *fakeEngine) LauncherSettingsChanged() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.idleChanges++
}

func (e *fakeEngine) SetEnvironment(env Environment) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.env = env
	return nil
}

func (e *fakeEngine) RestartDockerd() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.restarts++
	b, err := os.ReadFile(e.daemonPath)
	if err != nil {
		return err
	}
	if strings.Contains(string(b), "bogus-option") {
		e.running = nil
		return errors.New("exit code 1: the following directives don't match any configuration option: bogus-option")
	}
	if p := e.env.Proxy; p != nil && strings.Contains(p.HTTP, "refused.example") {
		e.running = nil
		return errors.New("exit code 1: proxy refused")
	}
	e.running, e.runningEnv = b, e.env
	return nil
}

func (e *fakeEngine) Switch(setting string, on bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.switchErr != nil {
		return e.switchErr
	}
	if e.switched == nil {
		e.switched = map[string]bool{}
	}
	e.switched[setting] = on
	return nil
}

var forced = map[string]json.RawMessage{"live-restore": json.RawMessage("true")}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newApplier is an applier over a data store in a temporary folder.
func newApplier(t *testing.T) (*Applier, string) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"etc/ddinit", "etc/docker"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := &Applier{
		Locate: func(rel string) string { return filepath.Join(root, rel) },
		Forced: forced,
		Log:    quietLog(),
		Now:    func() time.Time { return time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) },
	}
	return a, root
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// booted loads an applier and attaches a fake engine, as PID 1 does.
func booted(t *testing.T, a *Applier, root string) *fakeEngine {
	t.Helper()
	if err := a.Load(nil); err != nil {
		t.Fatal(err)
	}
	e := &fakeEngine{daemonPath: filepath.Join(root, DaemonFile)}
	if err := e.RestartDockerd(); err != nil {
		t.Fatalf("dockerd's first start: %v", err)
	}
	a.Accepted()
	a.Attach(e, map[string]string{"hosts": "ddinit gives dockerd --host"})
	return e
}

func TestPutAppliesStoresAndRollsBack(t *testing.T) {
	a, root := newApplier(t)
	e := booted(t, a, root)

	v, err := a.Put([]byte(`{"generation": 0, "daemonJSON": {"labels": ["a=1"]}}`))
	if err != nil || v.Generation != 1 {
		t.Fatalf("a change: %+v %v", v, err)
	}
	if !strings.Contains(string(e.running), `"a=1"`) || !strings.Contains(string(e.running), `"live-restore": true`) {
		t.Fatalf("dockerd runs on %s", e.running)
	}
	if got := readFile(t, filepath.Join(root, AcceptedDaemonFile)); got != string(e.running) {
		t.Fatalf("the accepted copy is %s, dockerd runs on %s", got, e.running)
	}

	// Refused by the engine: rolled back, the document and daemon.json as
	// they were, the engine's message in the answer.
	restarts := e.restarts
	v, err = a.Put([]byte(`{"generation": 1, "daemonJSON": {"labels": ["b=1"], "bogus-option": true}}`))
	if !IsRolledBack(err) || !strings.Contains(err.Error(), "bogus-option") || v.Generation != 1 || !strings.Contains(v.LastError, "bogus-option") {
		t.Fatalf("a refused change: %+v %v", v, err)
	}
	if e.restarts != restarts+2 || !strings.Contains(string(e.running), `"a=1"`) {
		t.Fatalf("after the rollback (%d restarts) dockerd runs on %s", e.restarts-restarts, e.running)
	}
	if st, rec := (Store{Path: filepath.Join(root, DocumentFile)}).Load(time.Now()); rec != nil || st.Generation != 1 {
		t.Fatalf("stored after the rollback: %+v %v", st, rec)
	}

	// Nothing changes and dockerd is not restarted for what is refused
	// before applying.
	restarts = e.restarts
	for body, kind := range map[string]func(error) bool{
		`{"generation": 0, "kubernetes": true}`:          errdefs.IsConflict,
		`{"generation": 1, "daemonJSON": {"hosts": []}}`: errdefs.IsInvalidArgument,
		`{"generation": 1, "colour": "blue"}`:            errdefs.IsInvalidArgument,
	} {
		if v, err := a.Put([]byte(body)); !kind(err) || v.Generation != 1 {
			t.Errorf("%s: %+v %v", body, v, err)
		}
	}
	if e.restarts != restarts {
		t.Fatalf("refused documents restarted dockerd %d times", e.restarts-restarts)
	}

	// Kubernetes alone switches its services and leaves dockerd alone.
	if v, err := a.Put([]byte(`{"generation": 1, "daemonJSON": {"labels": ["a=1"]}, "kubernetes": true}`)); err != nil || v.Generation != 2 {
		t.Fatalf("kubernetes on: %+v %v", v, err)
	}
	if !e.switched["kubernetes"] || e.restarts != restarts || !a.KubernetesOn() {
		t.Fatalf("kubernetes on: switched %v, %d restarts", e.switched, e.restarts-restarts)
	}

	// A switch the engine cannot make changes nothing: not the document,
	// not the daemon.json that came with it (dockerd restarted back).
	e.mu.Lock()
	e.switchErr = errors.New("no Kubernetes image")
	e.mu.Unlock()
	v, err = a.Put([]byte(`{"generation": 2, "daemonJSON": {"labels": ["b=2"]}, "kubernetes": false}`))
	if err == nil || !strings.Contains(err.Error(), "no Kubernetes image") || v.Generation != 2 || !a.KubernetesOn() {
		t.Fatalf("a switch that failed: %+v %v", v, err)
	}
	if b, _ := os.ReadFile(a.Locate(DaemonFile)); strings.Contains(string(b), "b=2") {
		t.Fatalf("the daemon.json of a change that failed stayed: %s", b)
	}
	v, err = a.Put([]byte(`{"generation": 2, "kubernetes": false}`))
	if !errdefs.IsFailedPrecondition(err) || v.Generation != 2 || !a.KubernetesOn() {
		t.Fatalf("a switch alone that failed: %+v %v", v, err)
	}
}

func TestPutDuringBootIsUnavailable(t *testing.T) {
	a, _ := newApplier(t)
	if _, err := a.Put([]byte(`{"generation": 0}`)); !errdefs.IsUnavailable(err) {
		t.Fatalf("before the boot loaded anything: %v", err)
	}
	if err := a.Load(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put([]byte(`{"generation": 0}`)); !errdefs.IsUnavailable(err) {
		t.Fatalf("loaded, no engine yet: %v", err)
	}
}

// Concurrent writers of the same generation: exactly one wins, the others
// are told theirs is stale, and the document is the winner's.
func TestConcurrentPutsOneWins(t *testing.T) {
	a, root := newApplier(t)
	booted(t, a, root)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.Put(fmt.Appendf(nil, `{"generation": 0, "daemonJSON": {"labels": ["w=%d"]}}`, i))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Fatalf("two writers of generation 0 won: %d and %d", winner, i)
		case !errdefs.IsConflict(err):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	v := a.View()
	if winner < 0 || v.Generation != 1 || string(v.Settings.DaemonJSON["labels"]) != fmt.Sprintf(`["w=%d"]`, winner) {
		t.Fatalf("winner %d, in force %+v", winner, v)
	}
	if d := readFile(t, filepath.Join(root, DaemonFile)); !strings.Contains(d, fmt.Sprintf(`"w=%d"`, winner)) {
		t.Fatalf("daemon.json is not the winner's: %s", d)
	}
}

// GET /settings is served from the first moment, while the boot loads the
// document: under -race, reading and loading must not race.
func TestViewWhileLoading(t *testing.T) {
	a, root := newApplier(t)
	writeFile(t, filepath.Join(root, DocumentFile), `{"generation": 4, "settings": {"kubernetes": true}}`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			a.View()
			a.KubernetesOn()
		}
	}()
	if err := a.Load(nil); err != nil {
		t.Fatal(err)
	}
	<-done
	if v := a.View(); v.Generation != 4 || !a.KubernetesOn() {
		t.Fatalf("loaded %+v", v)
	}
}

// Every way the stored document can be unusable at boot: moved aside, the
// last good copy in force (or none), never a failed boot.
func TestLoadRecoversAnUnusableDocument(t *testing.T) {
	good := `{"generation": 2, "settings": {"daemonJSON": {"labels": ["b=1"]}}}`
	full := good + "\n"
	for name, content := range map[string]string{
		"cut to 20 bytes": full[:20],
		"empty":           "",
		"cut mid-string":  full[:len(full)/2],
		"not JSON":        "\x00\x01garbage",
		"wrong types":     `{"generation": "two", "settings": []}`,
		"negative":        `{"generation": -1}`,
	} {
		for _, withGood := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/last good %v", name, withGood), func(t *testing.T) {
				a, root := newApplier(t)
				doc := filepath.Join(root, DocumentFile)
				writeFile(t, doc, content)
				if withGood {
					writeFile(t, doc+".last-good", good)
				}
				if err := a.Load(nil); err != nil {
					t.Fatalf("the boot failed: %v", err)
				}
				v := a.View()
				if len(v.Recovered) != 1 || v.Recovered[0].File != doc {
					t.Fatalf("recovered: %+v", v.Recovered)
				}
				r := v.Recovered[0]
				if got := readFile(t, r.KeptAs); got != content || !strings.HasPrefix(r.KeptAs, doc+".bad-") {
					t.Fatalf("kept aside as %s: %q", r.KeptAs, got)
				}
				daemon := readFile(t, filepath.Join(root, DaemonFile))
				if withGood {
					if v.Generation != 2 || !strings.Contains(daemon, `"b=1"`) || !strings.Contains(r.Using, "generation 2") {
						t.Fatalf("in force: %+v, daemon.json %s", v, daemon)
					}
					if st, rec := (Store{Path: doc}).Load(time.Now()); rec != nil || st.Generation != 2 {
						t.Fatalf("the document was not written back from the last good copy: %+v %v", st, rec)
					}
				} else if v.Generation != 0 || strings.Contains(daemon, "b=1") {
					t.Fatalf("in force: %+v, daemon.json %s", v, daemon)
				}
			})
		}
	}
}

// A daemon.json of the data store (no document) that is not JSON: kept
// aside before dockerd reads it; the last one dockerd accepted, else the
// pack's, else an empty one, in force.
func TestLoadRecoversAnUnusableDaemonJSON(t *testing.T) {
	pack := []byte(`{"features": {"buildkit": false}}`)
	for name, c := range map[string]struct {
		accepted string
		want     string
	}{
		"accepted copy": {accepted: "{\n  \"labels\": [\"ok=1\"],\n  \"live-restore\": true\n}\n", want: `"ok=1"`},
		"pack's":        {want: `"buildkit": false`},
	} {
		for _, bad := range []string{"{", `{"labels": ["x"]`, "[]", "null", `"text"`, `{"a":1} {"b":2}`} {
			t.Run(name+"/"+bad, func(t *testing.T) {
				a, root := newApplier(t)
				path := filepath.Join(root, DaemonFile)
				writeFile(t, path, bad)
				if c.accepted != "" {
					writeFile(t, filepath.Join(root, AcceptedDaemonFile), c.accepted)
				}
				if err := a.Load(pack); err != nil {
					t.Fatal(err)
				}
				v := a.View()
				if len(v.Recovered) != 1 || readFile(t, v.Recovered[0].KeptAs) != bad {
					t.Fatalf("recovered: %+v", v.Recovered)
				}
				if got := readFile(t, path); !strings.Contains(got, c.want) || !strings.Contains(got, `"live-restore": true`) {
					t.Fatalf("daemon.json now: %s", got)
				}
			})
		}
	}
}

// dockerd refusing its daemon.json at boot (an option it rejects): the
// file is kept aside and the last accepted one written, once; a dockerd
// that fails on the file it accepted before is not the file's doing.
func TestRefusedAtBoot(t *testing.T) {
	a, root := newApplier(t)
	path := filepath.Join(root, DaemonFile)
	writeFile(t, path, `{"labels": ["ok=1"]}`)
	booted(t, a, root) // dockerd accepted it
	accepted := readFile(t, path)
	writeFile(t, path, `{"labels": ["ok=1"], "bogus-option": true}`)

	if !a.RefusedAtBoot("exit code 1: bogus-option") {
		t.Fatal("a refused daemon.json was not rolled back")
	}
	if got := readFile(t, path); got != accepted {
		t.Fatalf("daemon.json after the rollback: %s, want %s", got, accepted)
	}
	v := a.View()
	if len(v.Recovered) != 1 || !strings.Contains(v.Recovered[0].Reason, "bogus-option") || !strings.Contains(readFile(t, v.Recovered[0].KeptAs), "bogus-option") {
		t.Fatalf("recovered: %+v", v.Recovered)
	}
	if a.RefusedAtBoot("exit code 1: something else") {
		t.Fatal("the accepted daemon.json was rolled back as if it were the cause")
	}
}

// A crash between writing daemon.json and storing the document: the next
// boot puts the daemon.json from before the change back (there was no
// document, so nothing else would); a change that was stored stands.
func TestInterruptedChangeIsUndoneAtBoot(t *testing.T) {
	a, root := newApplier(t)
	daemon := filepath.Join(root, DaemonFile)
	writeFile(t, daemon, `{"labels": ["old=1"]}`)
	booted(t, a, root)
	if err := a.journal(Stored{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, daemon, `{"labels": ["new=1"]}`) // then the crash

	again, _ := newApplier(t)
	again.Locate = a.Locate
	if err := again.Load(nil); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, daemon); !strings.Contains(got, "old=1") {
		t.Fatalf("daemon.json after an interrupted change: %s", got)
	}
	if _, err := os.Stat(filepath.Join(root, PendingFile)); !os.IsNotExist(err) {
		t.Fatalf("the journal is still there: %v", err)
	}

	// Stored before the crash: it stands.
	if _, err := again.Put([]byte(`{"generation": 0}`)); !errdefs.IsUnavailable(err) {
		t.Fatal("a change before the engine is attached was not refused as unavailable")
	}
	booted(t, again, root)
	if _, err := again.Put([]byte(`{"generation": 0, "daemonJSON": {"labels": ["new=2"]}}`)); err != nil {
		t.Fatal(err)
	}
	third, _ := newApplier(t)
	third.Locate = a.Locate
	if err := third.Load(nil); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, daemon); !strings.Contains(got, "new=2") || third.View().Generation != 1 {
		t.Fatalf("after a stored change: generation %d, %s", third.View().Generation, got)
	}
}

// stoppingEngine is an engine that is shutting down.
type stoppingEngine struct{ fakeEngine }

func (e *stoppingEngine) RestartDockerd() error {
	return fmt.Errorf("%w: the services are stopping", errdefs.ErrUnavailable)
}

// A change that meets a stopping engine is not "rolled back": the file is
// put back and the answer says the engine is unavailable.
func TestPutWhileTheEngineStops(t *testing.T) {
	a, root := newApplier(t)
	booted(t, a, root)
	before := readFile(t, filepath.Join(root, DaemonFile))
	a.Attach(&stoppingEngine{}, nil)
	_, err := a.Put([]byte(`{"generation": 0, "daemonJSON": {"labels": ["x=1"]}}`))
	if !errdefs.IsUnavailable(err) || IsRolledBack(err) {
		t.Fatalf("a change while stopping: %v", err)
	}
	if got := readFile(t, filepath.Join(root, DaemonFile)); got != before {
		t.Fatalf("daemon.json: %s, want %s", got, before)
	}
}

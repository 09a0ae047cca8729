package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/sirupsen/logrus"
)

// Files of the data store the applier reads and writes, relative to its
// root.
const (
	DocumentFile = "etc/ddinit/settings.json"
	DaemonFile   = "etc/docker/daemon.json"
	// AcceptedDaemonFile is a copy of the last daemon.json dockerd became
	// ready on: what a daemon.json it refuses is rolled back to.
	AcceptedDaemonFile = "etc/ddinit/daemon.json.accepted"
)

// Engine is what applying settings needs of the supervisor.
type Engine interface {
	// RestartDockerd restarts dockerd on the daemon.json just written and
	// returns once it is ready again, or why it is not (dockerd's own last
	// words).
	RestartDockerd() error
	// Switch turns the services of a setting ("kubernetes") on or off;
	// an error says why it cannot (no Kubernetes image), with nothing
	// changed.
	Switch(setting string, on bool) error
	// SetEnvironment puts the proxy and the trusted CAs in place for
	// dockerd's next start (and for what else follows them: new
	// containers, builds); RestartDockerd then makes them count.
	SetEnvironment(Environment) error
	// LauncherSettingsChanged says a setting ddinit run applies changed:
	// idleStop, idlePause, hostNetworkPorts (nothing restarts for them).
	LauncherSettingsChanged()
}

// View is the settings as the control API shows them: the document in
// force, its generation, a change being applied, how the last change that
// failed failed, and what the boot could not use.
type View struct {
	Generation int64    `json:"generation"`
	Settings   Document `json:"settings"`
	Applying   string   `json:"applying,omitempty"`
	// LastError is the last change that was rolled back, with the
	// engine's own message.
	LastError string `json:"lastError,omitempty"`
	// Recovered lists the files this boot could not use and what it did
	// instead.
	Recovered []Recovery `json:"recovered,omitempty"`
}

// Applier owns the settings from boot to shutdown: it loads them before
// dockerd first starts (a file it cannot use is kept aside, never fatal),
// applies changes one at a time (validated first, rolled back when the
// engine refuses them), and rolls back a daemon.json dockerd refuses at
// boot.
type Applier struct {
	// Locate is where a file of the data store is now (it moves when PID 1
	// enters its root); Shown, where a person in the distro finds it.
	Locate, Shown func(rel string) string
	// Forced are the daemon.json keys ddinit sets, over the user's.
	Forced map[string]json.RawMessage
	// Kubernetes is the switch when no document sets it (the config's).
	Kubernetes bool
	Log        logrus.FieldLogger
	Now        func() time.Time // time.Now unless a test says

	changing sync.Mutex // one change at a time: Put, RefusedAtBoot

	mu        sync.Mutex // what follows; never held across I/O on the engine
	stored    Stored
	inForce   map[string]json.RawMessage // the user's part of the daemon.json written
	pack      []byte                     // the version pack's daemon.json
	engine    Engine
	owned     map[string]string
	applying  string
	lastError string
	recovered []Recovery
}

func (a *Applier) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// shown is where a person in the distro finds the file rel and, when it
// was kept aside at kept (as PID 1 sees it), its copy.
func (a *Applier) shown(rel, kept string) (file, keptAs string) {
	show := a.Shown
	if show == nil {
		show = a.Locate
	}
	if kept != "" {
		keptAs = show(rel) + strings.TrimPrefix(kept, a.Locate(rel))
	}
	return show(rel), keptAs
}

func (a *Applier) store() Store { return Store{Path: a.Locate(DocumentFile)} }

// Load reads the stored settings at boot, before dockerd first starts, and
// writes the daemon.json dockerd will read: the document's, or without one
// the data store's own. A document or daemon.json that cannot be used is
// kept aside and the last good one used instead (the version pack's,
// pack, when there is none); the View's Recovered says so. It fails only
// when daemon.json cannot be written.
func (a *Applier) Load(pack []byte) error {
	a.changing.Lock()
	defer a.changing.Unlock()
	a.mu.Lock()
	a.pack = pack
	a.mu.Unlock()
	st, rec := a.store().Load(a.now())
	if what := a.finishInterrupted(st); what != "" {
		a.Log.Warn(what)
	}
	daemon := st.Settings.DaemonJSON
	var recs []Recovery
	if rec != nil {
		rec.File, rec.KeptAs = a.shown(DocumentFile, rec.KeptAs)
		recs = append(recs, *rec)
	}
	if daemon == nil {
		// No document: the data store's daemon.json (the pack's, or what
		// the user put there) stays the base, if dockerd can read it.
		path := a.Locate(DaemonFile)
		b, err := regularfile.Read(path, MaxDocumentBytes)
		switch {
		case errors.Is(err, os.ErrNotExist):
			daemon, err = map[string]json.RawMessage{}, nil
		case err == nil:
			daemon, err = ParseDaemonJSON(b)
		}
		if err != nil {
			r := Recovery{Reason: err.Error()}
			kept, merr := MoveAside(path, a.now())
			if merr != nil {
				r.Reason += "; it could not be moved aside: " + merr.Error()
			}
			r.File, r.KeptAs = a.shown(DaemonFile, kept)
			daemon, r.Using = a.fallbackDaemon()
			recs = append(recs, r)
		}
	}
	a.mu.Lock()
	a.stored, a.inForce = st, withoutForced(daemon, a.Forced)
	a.mu.Unlock()
	a.AddRecovered(recs...)
	return a.writeDaemonJSON(daemon)
}

// AddRecovered logs files the boot could not use and lists them in the
// View's Recovered: Load's own, and those PID 1 learns of elsewhere (a
// folder of the data store kept aside when it was opened).
func (a *Applier) AddRecovered(recs ...Recovery) {
	for _, r := range recs {
		a.Log.WithField("file", r.File).WithField("keptAs", r.KeptAs).WithField("reason", r.Reason).Warn("a file the boot reads could not be used; in force: " + r.Using)
	}
	a.mu.Lock()
	a.recovered = append(a.recovered, recs...)
	a.mu.Unlock()
}

// fallbackDaemon is the daemon.json to fall back on: the last one dockerd
// accepted, else the version pack's, else none; and which it is.
func (a *Applier) fallbackDaemon() (map[string]json.RawMessage, string) {
	if b, err := regularfile.Read(a.Locate(AcceptedDaemonFile), MaxDocumentBytes); err == nil {
		if m, err := ParseDaemonJSON(b); err == nil {
			return withoutForced(m, a.Forced), "the last daemon.json dockerd accepted"
		}
	}
	a.mu.Lock()
	pack := a.pack
	a.mu.Unlock()
	if m, err := ParseDaemonJSON(pack); err == nil {
		return withoutForced(m, a.Forced), "the version pack's daemon.json"
	}
	return map[string]json.RawMessage{}, "an empty daemon.json (dockerd's defaults)"
}

func withoutForced(m, forced map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		if _, ok := forced[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// writeDaemonJSON writes the daemon.json for the user's part, unless it
// already says exactly that (no write, no sync, on every boot).
func (a *Applier) writeDaemonJSON(user map[string]json.RawMessage) error {
	b, err := DaemonJSON(user, a.Forced)
	if err != nil {
		return err
	}
	path := a.Locate(DaemonFile)
	if cur, err := regularfile.Read(path, MaxDocumentBytes); err == nil && bytes.Equal(cur, b) {
		return nil
	}
	return atomicfile.Write(path, b, 0o644)
}

// Attach is called once the supervisor runs: changes can be applied from
// now on. owned are the daemon.json keys a document must not set, each
// with why.
func (a *Applier) Attach(e Engine, owned map[string]string) {
	a.mu.Lock()
	a.engine, a.owned = e, owned
	a.mu.Unlock()
}

// Environment is the proxy and CAs in force: what dockerd starts with at
// boot, before any change.
func (a *Applier) Environment() Environment {
	a.mu.Lock()
	defer a.mu.Unlock()
	return EnvironmentOf(a.stored.Settings)
}

// KubernetesOn is whether the kubernetes services run: the document's
// switch, else the config's.
func (a *Applier) KubernetesOn() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if k := a.stored.Settings.Kubernetes; k != nil {
		return *k
	}
	return a.Kubernetes
}

// View is the settings in force.
func (a *Applier) View() View {
	a.mu.Lock()
	defer a.mu.Unlock()
	return View{
		Generation: a.stored.Generation,
		Settings:   a.stored.Settings,
		Applying:   a.applying,
		LastError:  a.lastError,
		Recovered:  append([]Recovery(nil), a.recovered...),
	}
}

// Accepted records that dockerd became ready on the daemon.json in place:
// it is what a refused one is rolled back to, at boot too.
func (a *Applier) Accepted() {
	b, err := regularfile.Read(a.Locate(DaemonFile), MaxDocumentBytes)
	if err != nil {
		a.Log.WithError(err).Warn("the daemon.json dockerd accepted could not be read")
		return
	}
	path := a.Locate(AcceptedDaemonFile)
	if cur, err := regularfile.Read(path, MaxDocumentBytes); err == nil && bytes.Equal(cur, b) {
		return
	}
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		a.Log.WithError(err).Warn("the daemon.json dockerd accepted could not be kept")
	}
}

// RefusedAtBoot handles dockerd ending before it was ever ready at boot,
// saying complaint: unless the daemon.json in place is already the one to
// fall back on, it is kept aside and the last one dockerd accepted (or the
// version pack's) written instead. It reports whether it changed
// daemon.json, so that dockerd is worth starting again at once.
func (a *Applier) RefusedAtBoot(complaint string) bool {
	a.changing.Lock()
	defer a.changing.Unlock()
	path := a.Locate(DaemonFile)
	cur, err := regularfile.Read(path, MaxDocumentBytes)
	if err != nil {
		return false
	}
	fallback, using := a.fallbackDaemon()
	want, err := DaemonJSON(fallback, a.Forced)
	if err != nil || bytes.Equal(cur, want) {
		return false // not daemon.json's doing, or nothing to go back to
	}
	r := Recovery{Reason: "dockerd refused it: " + complaint, Using: using}
	aside := path + ".bad-" + a.now().UTC().Format("20060102T150405Z")
	if err := atomicfile.Write(aside, cur, 0o644); err != nil {
		aside = ""
	}
	r.File, r.KeptAs = a.shown(DaemonFile, aside)
	if err := atomicfile.Write(path, want, 0o644); err != nil {
		a.Log.WithError(err).Error("the refused daemon.json could not be replaced")
		return false
	}
	a.Log.WithField("file", path).WithField("keptAs", r.KeptAs).WithField("reason", r.Reason).Warn("dockerd refused its daemon.json at boot; in force: " + using)
	a.mu.Lock()
	a.inForce = fallback
	a.recovered = append(a.recovered, r)
	a.mu.Unlock()
	return true
}

// Put validates, applies and stores a document (a PUT body). Nothing
// changes for an invalid document (errdefs invalid argument), a stale
// generation (conflict) or while the engine boots (unavailable); a change
// the engine refuses is rolled back (ErrRolledBack), with the
// engine's own message.
func (a *Applier) Put(body []byte) (View, error) {
	a.changing.Lock()
	defer a.changing.Unlock()
	a.mu.Lock()
	engine, owned, cur, oldDaemon := a.engine, a.owned, a.stored, a.inForce
	a.mu.Unlock()
	if engine == nil {
		return a.View(), fmt.Errorf("%w: the engine is still booting: try again when /ping answers", errdefs.ErrUnavailable)
	}
	p, err := Parse(body, owned)
	if err != nil {
		return a.View(), err
	}
	next, err := Next(cur, p)
	if err != nil {
		return a.View(), err
	}
	log := a.Log.WithField("generation", next.Generation)
	newDaemon := next.Settings.DaemonJSON
	if newDaemon == nil {
		newDaemon = oldDaemon // not in the document: left as it is
	}
	// The same for the proxy and the CAs; stored as in force, since no
	// other file keeps them ({} and [] clear them).
	keepUnnamed(&next.Settings, cur.Settings)
	launcherChanges := !sameString(cur.Settings.IdleStop, next.Settings.IdleStop) || !sameString(cur.Settings.IdlePause, next.Settings.IdlePause) ||
		cur.Settings.HostNetworkPortsOn() != next.Settings.HostNetworkPortsOn()
	oldEnv, newEnv := EnvironmentOf(cur.Settings), EnvironmentOf(next.Settings)
	envChanges := !oldEnv.Equal(newEnv)
	daemonChanges := !Equal(oldDaemon, newDaemon)
	if daemonChanges || envChanges {
		// Journalled first: a crash from here until the document is stored
		// puts the old daemon.json back at the next boot.
		defer os.Remove(a.Locate(PendingFile))
		change := dockerdChange{next: next, oldDaemon: oldDaemon, newDaemon: newDaemon, oldEnv: oldEnv, newEnv: newEnv, env: envChanges}
		if err := a.restartWith(engine, change, log); err != nil {
			return a.View(), err
		}
	}
	wasK := a.KubernetesOn()
	isK := a.Kubernetes
	if k := next.Settings.Kubernetes; k != nil {
		isK = *k
	}
	switchK := func(on bool) error {
		a.setApplying(fmt.Sprintf("switching kubernetes %s", map[bool]string{true: "on", false: "off"}[on]))
		return engine.Switch("kubernetes", on)
	}
	if wasK != isK {
		if err := switchK(isK); err != nil {
			if !daemonChanges && !envChanges {
				a.setApplying("")
				return a.View(), fmt.Errorf("%w: nothing changed: %w", errdefs.ErrFailedPrecondition, err)
			}
			return a.View(), a.rollBack(engine, oldDaemon, oldEnv, envChanges, err.Error())
		}
	}
	if err := a.store().Save(next); err != nil {
		if wasK != isK {
			if err := switchK(wasK); err != nil {
				a.Log.WithError(err).Error("kubernetes could not be switched back")
			}
		}
		if !daemonChanges && !envChanges {
			a.setApplying("")
			return a.View(), fmt.Errorf("nothing changed: %w", err)
		}
		err = a.rollBack(engine, oldDaemon, oldEnv, envChanges, "it could not be stored: "+err.Error())
		return a.View(), err
	}
	if daemonChanges {
		a.Accepted()
	}
	a.mu.Lock()
	a.stored, a.inForce, a.applying, a.lastError = next, newDaemon, "", ""
	a.mu.Unlock()
	if launcherChanges {
		engine.LauncherSettingsChanged()
	}
	log.Info("settings applied")
	return a.View(), nil
}

// keepUnnamed keeps, in a document, what it does not name of the one in
// force: the proxy, the CAs, the idle durations, hostNetworkPorts.
func keepUnnamed(next *Document, cur Document) {
	if next.Proxy == nil {
		next.Proxy = cur.Proxy
	}
	if next.TrustedCAs == nil {
		next.TrustedCAs = cur.TrustedCAs
	}
	if next.IdleStop == nil {
		next.IdleStop = cur.IdleStop
	}
	if next.IdlePause == nil {
		next.IdlePause = cur.IdlePause
	}
	if next.HostNetworkPorts == nil {
		next.HostNetworkPorts = cur.HostNetworkPorts
	}
}

// dockerdChange is what a settings change asks of dockerd: a new
// daemon.json, a new environment, or both.
type dockerdChange struct {
	next                 Stored
	oldDaemon, newDaemon map[string]json.RawMessage
	oldEnv, newEnv       Environment
	env                  bool // the environment changes
}

// restartWith journals the change, puts the new daemon.json and
// environment in place and restarts dockerd on them; on an error what
// changed goes back (rolled back with dockerd's restart when dockerd
// refused it).
func (a *Applier) restartWith(engine Engine, c dockerdChange, log logrus.FieldLogger) error {
	a.setApplying("restarting dockerd")
	if err := a.journal(c.next); err != nil {
		a.setApplying("")
		return fmt.Errorf("nothing changed: %w", err)
	}
	if err := a.writeDaemonJSON(c.newDaemon); err != nil {
		a.setApplying("")
		return fmt.Errorf("nothing changed: %w", err)
	}
	if c.env {
		if err := engine.SetEnvironment(c.newEnv); err != nil {
			a.writeDaemonJSON(c.oldDaemon)
			engine.SetEnvironment(c.oldEnv)
			a.setApplying("")
			return fmt.Errorf("nothing changed: %w", err)
		}
	}
	err := engine.RestartDockerd()
	if err == nil {
		return nil
	}
	if errdefs.IsUnavailable(err) || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		// Not dockerd's verdict: the engine is stopping, or has no
		// dockerd. What changed goes back; the answer says why.
		a.writeDaemonJSON(c.oldDaemon)
		if c.env {
			engine.SetEnvironment(c.oldEnv)
		}
		a.setApplying("")
		return err
	}
	log.WithField("error", err.Error()).Error("dockerd refused the change; rolling back")
	return a.rollBack(engine, c.oldDaemon, c.oldEnv, c.env, "dockerd did not start with it: "+err.Error())
}

// PendingFile journals a daemon.json change in progress: the document it
// makes and the daemon.json it replaces.
const PendingFile = "etc/ddinit/settings.json.pending"

// maxPendingBytes bounds the journal: a document and the daemon.json it
// replaces, the latter base64 (a third larger).
const maxPendingBytes = 3 * MaxDocumentBytes

type pendingChange struct {
	Next Stored `json:"next"`
	// Previous is the daemon.json replaced; none when HadPrevious is false.
	Previous    []byte `json:"previous"`
	HadPrevious bool   `json:"hadPrevious"`
}

// journal records, before daemon.json is replaced, what a boot after a
// crash needs to put it back.
func (a *Applier) journal(next Stored) error {
	p := pendingChange{Next: next}
	b, err := regularfile.Read(a.Locate(DaemonFile), MaxDocumentBytes)
	switch {
	case err == nil:
		p.Previous, p.HadPrevious = b, true
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("daemon.json: %w", err)
	}
	out, _ := json.Marshal(p)
	return atomicfile.Write(a.Locate(PendingFile), out, 0o644)
}

// finishInterrupted, at boot, settles a change a crash cut short: stored
// (cur is its generation), it stands; not stored, the daemon.json it
// replaced is put back. It reports what it did, for the log.
func (a *Applier) finishInterrupted(cur Stored) string {
	path := a.Locate(PendingFile)
	b, err := regularfile.Read(path, maxPendingBytes)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		// Not one ddinit wrote (a FIFO, a folder, a file too large):
		// nothing to settle, and nothing of ddinit's to remove.
		return "a record of an interrupted change could not be read and was ignored: " + err.Error()
	}
	defer os.Remove(path)
	var p pendingChange
	if json.Unmarshal(b, &p) != nil {
		return "an unreadable record of an interrupted change was removed"
	}
	if p.Next.Generation == cur.Generation {
		return ""
	}
	daemon := a.Locate(DaemonFile)
	if !p.HadPrevious {
		os.Remove(daemon)
	} else if err := atomicfile.Write(daemon, p.Previous, 0o644); err != nil {
		return "the daemon.json of an interrupted change could not be put back: " + err.Error()
	}
	return fmt.Sprintf("a settings change (generation %d) was interrupted before it was stored: the daemon.json before it is back", p.Next.Generation)
}

// rollBack puts the previous daemon.json (and environment, when it
// changed) back and restarts dockerd on it; the error says why the change
// was rolled back.
func (a *Applier) rollBack(engine Engine, old map[string]json.RawMessage, oldEnv Environment, envChanged bool, why string) error {
	a.setApplying("rolling back: restarting dockerd on the previous settings")
	if envChanged {
		if err := engine.SetEnvironment(oldEnv); err != nil {
			a.Log.WithError(err).Error("the previous proxy and CAs could not be restored")
		}
	}
	if err := a.writeDaemonJSON(old); err != nil {
		a.Log.WithError(err).Error("the previous daemon.json could not be restored")
	} else if err := engine.RestartDockerd(); err != nil {
		a.Log.WithField("error", err.Error()).Error("dockerd does not come back on the previous daemon.json either")
	}
	msg := "the change was rolled back: " + why
	a.mu.Lock()
	a.applying, a.lastError = "", msg
	a.mu.Unlock()
	return RolledBack(msg)
}

func (a *Applier) setApplying(what string) {
	a.mu.Lock()
	a.applying = what
	a.mu.Unlock()
}

func sameString(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

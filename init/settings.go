package initd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/settings"
	"github.com/sirupsen/logrus"
)

// The settings document: stored in the data store, applied at boot before
// dockerd first starts, and live on PUT /settings — a changed daemon.json
// restarts dockerd only (live-restore keeps containers running), the
// kubernetes switch starts or stops its services only, and a change dockerd
// refuses is rolled back.

// forcedDaemonJSON is what ddinit sets in every daemon.json: live-restore,
// so that restarting dockerd for a settings change keeps containers
// running.
var forcedDaemonJSON = map[string]json.RawMessage{"live-restore": json.RawMessage("true")}

// ownedDaemonKeys are the daemon.json keys ddinit sets, and why: the
// flags ddinit gives dockerd (its service definition) and what it forces.
func ownedDaemonKeys(defs []services.Definition) map[string]string {
	owned := map[string]string{
		"live-restore": "settings changes restart dockerd with containers kept running",
		"pidfile":      "the supervisor tracks dockerd",
	}
	for _, d := range defs {
		if d.Name != "dockerd" {
			continue
		}
		for _, a := range d.Spec.Process.Args[1:] {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if name == "host" {
				name = "hosts"
			}
			if name != "" && name != "config-file" {
				owned[name] = "ddinit gives dockerd --" + strings.TrimLeft(a, "-")
			}
		}
	}
	return owned
}

// loadSettings reads the stored document (mounts phase, before dockerd
// starts) and writes the daemon.json dockerd will read.
func (in *pid1) loadSettings() error {
	in.settingsStore = settings.Store{Path: in.ds.Path("etc/ddinit/settings.json")}
	st, err := in.settingsStore.Load()
	if err != nil {
		return err
	}
	in.settingsState = st
	daemon := st.Settings.DaemonJSON
	if daemon == nil {
		// No document yet: the data store's daemon.json (the pack's, or
		// what the user put there) stays the base.
		b, err := os.ReadFile(in.daemonJSONPath())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("daemon.json: %w", err)
		}
		if len(b) > 0 && json.Unmarshal(b, &daemon) != nil {
			in.log.WithField("path", in.daemonJSONPath()).Warn("daemon.json is not valid JSON; dockerd will say why")
			return nil
		}
	}
	in.baseDaemonJSON = daemon
	return in.writeDaemonJSON(daemon)
}

func (in *pid1) daemonJSONPath() string { return in.storePath("etc/docker/daemon.json") }

// storePath is where a path of the data store is for PID 1 now: in the
// distro before the root switch, through its bind after it.
func (in *pid1) storePath(rel string) string {
	abs := in.ds.Path(rel)
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.switched {
		for _, m := range in.mounted {
			if r, err := filepath.Rel(m.Source, abs); m.FromDistro && err == nil && !strings.HasPrefix(r, "..") {
				return filepath.Join(m.Target, r)
			}
		}
	}
	return abs
}

func (in *pid1) writeDaemonJSON(user map[string]json.RawMessage) error {
	b, err := settings.DaemonJSON(user, forcedDaemonJSON)
	if err != nil {
		return err
	}
	if cur, err := os.ReadFile(in.daemonJSONPath()); err == nil && bytes.Equal(cur, b) {
		return nil // as it is: no write, no sync, on every boot
	}
	return settings.WriteAtomic(in.daemonJSONPath(), b, 0o644)
}

// kubernetes is whether the kubernetes services run: the document's
// switch, else the config's.
func (in *pid1) kubernetes() bool {
	if k := in.settingsState.Settings.Kubernetes; k != nil {
		return *k
	}
	return in.cfg.Kubernetes
}

// Settings implements control.Backend.
func (c backend) Settings() control.Settings {
	in := c.in
	in.mu.Lock()
	defer in.mu.Unlock()
	return control.Settings{Generation: in.settingsState.Generation, Settings: in.settingsState.Settings, Applying: in.applying, LastError: in.settingsError}
}

// PutSettings implements control.Backend: validate (nothing changes on a
// bad document), apply what changed, roll back what the engine refuses,
// and store the document once it is in force.
func (c backend) PutSettings(body []byte) (control.Settings, error) {
	in := c.in
	in.settingsMu.Lock()
	defer in.settingsMu.Unlock()
	in.mu.Lock()
	sup, cur := in.sup, in.settingsState
	in.mu.Unlock()
	if sup == nil {
		return c.Settings(), errors.New("the engine is still booting: try again when /ping answers")
	}
	p, err := settings.Parse(body, in.ownedKeys)
	if err != nil {
		return c.Settings(), err
	}
	next, err := settings.Next(cur, p)
	if err != nil {
		return c.Settings(), err
	}
	in.settingsStore.Path = in.storePath("etc/ddinit/settings.json")
	log := in.log.WithFields(logrus.Fields{"component": "settings", "generation": next.Generation})
	oldDaemon := cur.Settings.DaemonJSON
	if oldDaemon == nil {
		oldDaemon = in.baseDaemonJSON
	}
	newDaemon := next.Settings.DaemonJSON
	if newDaemon == nil {
		newDaemon = oldDaemon // not in the document: left as it is
	}
	if !settings.Equal(oldDaemon, newDaemon) {
		in.setApplying("restarting dockerd")
		if err := in.writeDaemonJSON(newDaemon); err != nil {
			in.setApplying("")
			return c.Settings(), err
		}
		if reason := in.restartDockerd(sup); reason != "" {
			log.WithField("error", reason).Error("dockerd refused the new daemon.json; rolling back")
			in.setApplying("rolling back: restarting dockerd on the previous daemon.json")
			if err := in.writeDaemonJSON(oldDaemon); err != nil {
				log.WithError(err).Error("the previous daemon.json could not be restored")
			}
			if again := in.restartDockerd(sup); again != "" {
				log.WithField("error", again).Error("dockerd does not come back on the previous daemon.json either")
			}
			msg := "the change was rolled back: dockerd did not start with it: " + reason
			in.mu.Lock()
			in.applying, in.settingsError = "", msg
			in.mu.Unlock()
			return c.Settings(), errors.New(msg)
		}
	}
	wasK, isK := in.kubernetes(), in.cfg.Kubernetes
	if k := next.Settings.Kubernetes; k != nil {
		isK = *k
	}
	if wasK != isK {
		in.setApplying(fmt.Sprintf("switching kubernetes %s", map[bool]string{true: "on", false: "off"}[isK]))
		sup.Switch("kubernetes", isK)
	}
	if err := in.settingsStore.Save(next); err != nil {
		in.setApplying("")
		return c.Settings(), fmt.Errorf("the change is in force but was not stored: %w", err)
	}
	in.mu.Lock()
	in.settingsState, in.applying, in.settingsError = next, "", ""
	in.mu.Unlock()
	log.Info("settings applied")
	return c.Settings(), nil
}

func (in *pid1) setApplying(what string) {
	in.mu.Lock()
	in.applying = what
	in.mu.Unlock()
}

// restartDockerd restarts dockerd and waits until it is ready again; it
// returns why it is not, with dockerd's own last words, when it does not
// become ready within the deadline or exits on the way.
func (in *pid1) restartDockerd(sup *services.Supervisor) string {
	before := dockerdStatus(sup)
	if err := sup.Restart("dockerd"); err != nil {
		return err.Error()
	}
	deadline := time.Now().Add(in.cfg.settingsDeadline())
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		st := dockerdStatus(sup)
		if st.Ready && st.PID != before.PID {
			return ""
		}
		// A restart asked for records no exit: any exit now is the new
		// dockerd's, refusing to run.
		if st.LastExit != nil && st.LastExit != before.LastExit {
			return lastWords(st.LastExit)
		}
	}
	return fmt.Sprintf("dockerd was not ready within %s", in.cfg.settingsDeadline())
}

func dockerdStatus(sup *services.Supervisor) services.Status {
	for _, st := range sup.Status() {
		if st.Name == "dockerd" {
			return st
		}
	}
	return services.Status{}
}

// lastWords is how a run ended and the last thing it said.
func lastWords(e *services.ExitInfo) string {
	msg := fmt.Sprintf("exit code %d", e.Code)
	for i := len(e.Output) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(e.Output[i]); line != "" {
			return msg + ": " + line
		}
	}
	return msg
}

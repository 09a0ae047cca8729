package pid1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/packs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/settings"
)

// The settings are the settings applier's (package settings): PID 1 gives
// it the data store's paths, the supervisor as its engine, and dockerd's
// first start of the boot to judge its daemon.json by.

// forcedDaemonJSON is what ddinit sets in every daemon.json: live-restore,
// so that restarting dockerd for a settings change keeps containers
// running.
var forcedDaemonJSON = map[string]json.RawMessage{"live-restore": json.RawMessage("true")}

// directRoutingSince is the first dockerd with allow-direct-routing (28.2):
// from 28.0 on dockerd drops, in the raw table, packets for a container's
// address that come from outside its bridge, which is every packet from
// the distros (they reach container IPs through the link: package
// bridgeroutes). An older dockerd refuses the key, and filters nothing
// there.
const directRoutingSince = "28.2"

// forcedFor is what ddinit forces in the daemon.json of a version pack
// whose dockerd is engine: forcedDaemonJSON, and allow-direct-routing
// where dockerd has it.
func forcedFor(engine string) map[string]json.RawMessage {
	forced := maps.Clone(forcedDaemonJSON)
	if c, err := packs.CompareEngines(engine, directRoutingSince); err == nil && c >= 0 {
		forced["allow-direct-routing"] = json.RawMessage("true")
	}
	return forced
}

// ownedDaemonKeys are the daemon.json keys ddinit sets, and why: the
// flags ddinit gives dockerd (its service definition) and what it forces.
func ownedDaemonKeys(defs []services.Definition, forced map[string]json.RawMessage) map[string]string {
	owned := map[string]string{
		"live-restore": "settings changes restart dockerd with containers kept running",
		"pidfile":      "the supervisor tracks dockerd",
	}
	if _, ok := forced["allow-direct-routing"]; ok {
		owned["allow-direct-routing"] = "the distros reach containers by their IP addresses"
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

// Settings implements control.Backend.
func (c backend) Settings() control.Settings { return settingsView(c.in.settings.View()) }

// PutSettings implements control.Backend.
func (c backend) PutSettings(body []byte) (control.Settings, error) {
	v, err := c.in.settings.Put(body)
	return settingsView(v), err
}

// engine is the supervisor as the settings applier sees it: the one in
// force (a wake after an idle stop makes a new one).
type engine struct {
	deadline time.Duration
	in       *pid1
}

func (e engine) sup() *services.Supervisor {
	e.in.mu.Lock()
	defer e.in.mu.Unlock()
	return e.in.sup
}

// LauncherSettingsChanged tells ddinit run the idle times and the
// reach (hostNetworkPorts) in force.
func (e engine) LauncherSettingsChanged() {
	e.in.tellIdleStop()
	e.in.tellReach()
}

// SetEnvironment puts the proxy and CAs in place for dockerd's next start.
func (e engine) SetEnvironment(env settings.Environment) error { return e.in.setEnvironment(env) }

// Switch switches a setting's services; a stopped engine takes the
// switch when it wakes (its new supervisor reads the settings).
func (e engine) Switch(setting string, on bool) error {
	if setting == "kubernetes" {
		return e.in.switchKubernetes(on)
	}
	switch stopped, paused := e.in.engineHeld(); {
	case stopped:
		if on {
			// Kubernetes on is not idle: the engine wakes, and its new
			// supervisor starts the switched-on services.
			e.in.bg.Go(func(context.Context) { e.in.wake() })
		}
		return nil
	case paused:
		if err := e.in.wake(); err != nil { // a thaw
			return fmt.Errorf("the paused engine did not thaw for the switch: %w", err)
		}
	}
	e.sup().Switch(setting, on)
	return nil
}

// RestartDockerd restarts dockerd and waits until it is ready again; the
// error says why it is not, with dockerd's own last words, when it does
// not become ready within the deadline or exits on the way.
func (e engine) RestartDockerd() error {
	// A change that needs the engine wakes it: it starts on what is now
	// in place, which is the restart.
	switch stopped, paused := e.in.engineHeld(); {
	case stopped:
		return e.in.wake()
	case paused:
		if err := e.in.wake(); err != nil { // a thaw; the restart follows
			return err
		}
	}
	sup := e.sup()
	before := dockerdStatus(sup)
	if err := sup.Restart("dockerd"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.deadline)
	defer cancel()
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool {
		// A restart asked for records no exit: any exit now is the new
		// dockerd's, refusing to run.
		return st.Ready && st.PID != before.PID || st.LastExit != nil && st.LastExit != before.LastExit
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("dockerd was not ready within %s", e.deadline)
	case err != nil:
		return err
	case !st.Ready:
		return errors.New(lastWords(st.LastExit))
	}
	return nil
}

// guardDaemonJSON watches dockerd's first start of the boot: ready, its
// daemon.json is kept as the last one accepted; ended before it was ever
// ready on a daemon.json it never accepted, saying why (an exit of its
// own, not a start that failed or a kill), that file is kept aside and
// dockerd started again at once on the last one it did. Once only: a
// dockerd that fails on that too is the restart policy's, and says why in
// /status. Settings changes are taken only once this is decided, so that
// no change races the judgement of the boot's file.
func (in *pid1) guardDaemonJSON(ctx context.Context, sup *services.Supervisor, owned map[string]string) {
	defer in.settings.Attach(engine{deadline: in.cfg.SettingsDeadlineOr(), in: in}, owned)
	if in.handoff.PackTrial {
		// A pack on trial is judged on its own: its dockerd failing is the
		// pack's fault, not daemon.json's, and rolls the pack back.
		in.watchTrial(ctx, sup)
		if st := dockerdStatus(sup); st.Ready {
			in.settings.Accepted()
			in.recordEngine()
		}
		return
	}
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool {
		return st.Ready || st.LastExit != nil
	})
	if err != nil {
		return // stopping, or a pack without dockerd
	}
	if !st.Ready {
		if e := st.LastExit; e.Error != "" || e.Signal != "" || e.Cause != "" || e.Code == 0 {
			return // not a refusal of its configuration
		}
		if !in.settings.RefusedAtBoot(lastWords(st.LastExit)) {
			return
		}
		if err := sup.Restart("dockerd"); err != nil {
			in.log.WithError(err).Warn("dockerd not restarted after its daemon.json was rolled back")
		}
		// Ready on the file rolled back to (the restart policy's backoff
		// may have started a run on the refused one in between).
		ready := func(st services.Status) bool { return st.Ready }
		if _, err := sup.Await(ctx, "dockerd", ready); err != nil {
			return
		}
	}
	in.settings.Accepted()
	in.recordEngine()
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

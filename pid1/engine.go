package pid1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
)

// The engine on demand: ddinit run, which serves every socket clients
// use, decides when nobody has used the engine for idleStop (or
// idlePause) and asks PID 1 to stop (or freeze) it; PID 1 does so only if
// no container runs and Kubernetes is off. The namespace, its mounts,
// network and sockets stay. The first client after that makes ddinit run
// ask PID 1 to wake it: a new supervisor starts containerd and the
// services, as at boot (a thaw, after a pause). PID 1 owns the engine's
// state machine (package enginestate) and tells ddinit run each
// transition; ddinit run's holder mirrors it.

// giveBack is the give-back of what an idle engine held, one at a time;
// stop (under in.mu) ends it early: a wake and the shutdown end it, and
// wait for it, before they go on.
type giveBack struct {
	mu       sync.Mutex
	stop     context.CancelFunc
	lastTrim time.Time
}

// moveEngine makes a transition of the engine's state machine and tells
// ddinit run; a step the table refuses is a mistake of this code, logged.
func (in *pid1) moveEngine(next enginestate.State, reason string) bool {
	if err := in.engine.To(next, reason); err != nil {
		in.log.WithError(err).Error("an engine transition refused")
		return false
	}
	in.reportEngine()
	return true
}

// reportEngine tells ddinit run where the engine is now.
func (in *pid1) reportEngine() {
	s := in.engine.Now()
	in.tell(wire.Message{Kind: wire.EngineState, Engine: &wire.Engine{State: s.State, Since: s.Since, Reason: s.Reason}})
}

// answerEngine does what ddinit run asks and answers it.
func (in *pid1) answerEngine(req wire.Request) {
	reply := wire.Reply{ID: req.ID}
	switch req.Op {
	case wire.PauseIfIdle, wire.StopIfIdle:
		act, stopping := in.pauseIfIdle, false
		if req.Op == wire.StopIfIdle {
			act, stopping = in.stopIfIdle, true
		}
		busy, did, err := act()
		reply.Busy, reply.Err = busy, wire.EncodeError(err)
		if did {
			// Given back once ddinit run knows, outside the engine's
			// operations; a wake ends it first.
			defer in.giveBack(stopping)
		}
	case wire.Wake:
		reply.Err = wire.EncodeError(in.wake())
	default:
		reply.Err = wire.EncodeError(fmt.Errorf("no engine operation %q", req.Op))
	}
	in.tell(wire.Message{Kind: wire.EngineReply, Reply: &reply})
}

// stopIfIdle stops dockerd and then containerd, unless a container runs,
// Kubernetes is on, a settings change is being applied or the boot is not
// done: then busy says which. A paused engine is thawed first.
func (in *pid1) stopIfIdle() (busy string, did bool, err error) {
	in.engineOps.Lock()
	defer in.engineOps.Unlock()
	if !in.engine.Step(enginestate.Stopping, "idle", enginestate.Running, enginestate.Paused) {
		return "", false, nil // stopped already, or being replaced
	}
	in.reportEngine()
	if err := in.thaw(); err != nil {
		in.moveEngine(enginestate.Paused, "")
		return "", false, err
	}
	in.mu.Lock()
	state, sup, sock := in.state, in.sup, in.dockerSocket
	in.mu.Unlock()
	if busy := in.busy(state, sup, sock); busy != "" {
		in.moveEngine(enginestate.Running, "")
		return busy, false, nil
	}
	in.log.Info("the engine is idle: stopping dockerd and containerd")
	sup.Stop()
	// dockerd's next start finds the network as a boot leaves it: it
	// makes its bridge and rules again from its own store either way.
	if err := network.ClearEngine(in.reaper); err != nil {
		in.log.WithError(err).Info("what dockerd left in the network stays; its next start clears it")
	}
	in.moveEngine(enginestate.Stopped, "idle")
	in.log.Info("engine stopped (idle)")
	return "", true, nil
}

// busy says why the engine is not idle after all: not running, a
// container runs, Kubernetes is on, settings are being applied.
func (in *pid1) busy(state string, sup *services.Supervisor, sock string) string {
	switch {
	case state != control.StateRunning || sup == nil:
		return "the engine is " + state
	case in.settings.KubernetesOn():
		return "Kubernetes is on"
	case in.settings.View().Applying != "":
		return "a settings change is being applied"
	}
	n, err := runningContainers(sock)
	if err != nil {
		return "dockerd does not say which containers run: " + err.Error()
	}
	if n > 0 {
		return fmt.Sprintf("%d container(s) running", n)
	}
	return ""
}

// pauseIfIdle freezes the engine's cgroup (containerd, its shims and
// every service) when it is idle: a wake is then a thaw, milliseconds.
// Liveness rests while it is frozen.
func (in *pid1) pauseIfIdle() (busy string, did bool, err error) {
	in.engineOps.Lock()
	defer in.engineOps.Unlock()
	in.mu.Lock()
	state, sup, sock, h := in.state, in.sup, in.dockerSocket, in.cgroups
	in.mu.Unlock()
	if h == nil {
		return "", false, errors.New("no cgroup hierarchy: the engine cannot be paused")
	}
	if !in.engine.Step(enginestate.Stopping, "idle", enginestate.Running) {
		return "", false, nil
	}
	in.reportEngine()
	if busy := in.busy(state, sup, sock); busy != "" {
		in.moveEngine(enginestate.Running, "")
		return busy, false, nil
	}
	sup.Rest(true)
	if err := h.Freeze(services.DefaultCgroupParent, true, 5*time.Second); err != nil {
		h.Freeze(services.DefaultCgroupParent, false, 5*time.Second)
		sup.Rest(false)
		in.moveEngine(enginestate.Running, "")
		return "", false, err
	}
	in.moveEngine(enginestate.Paused, "idle")
	in.log.Info("engine paused (idle): its cgroup is frozen")
	return "", true, nil
}

// thaw unfreezes a frozen engine (in.engineOps held). The state is the
// caller's to move.
func (in *pid1) thaw() error {
	in.mu.Lock()
	sup, h := in.sup, in.cgroups
	in.mu.Unlock()
	if h == nil || !h.Frozen(services.DefaultCgroupParent) {
		return nil
	}
	if err := h.Freeze(services.DefaultCgroupParent, false, 5*time.Second); err != nil {
		return err
	}
	if sup != nil {
		sup.Rest(false)
	}
	return nil
}

// giveBack returns what an idle engine held: the memory its cgroups were
// charged (v2 memory.reclaim; v1: memory.force_empty on the cgroups left
// empty: after a stop, all of them) and ddinit's own free heap; after a
// stop also the data store's free blocks (FITRIM), at most every
// trimEvery.
func (in *pid1) giveBack(stopped bool) {
	in.giving.mu.Lock()
	defer in.giving.mu.Unlock()
	from := enginestate.Paused
	if stopped {
		from = enginestate.Stopped
	}
	if !in.engine.Step(enginestate.GivingBack, "", from) {
		return // a wake came first
	}
	in.reportEngine()
	ctx, cancel := context.WithCancelCause(context.Background())
	in.mu.Lock()
	in.giving.stop = func() { cancel(errors.New("the engine is wanted")) }
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.giving.stop = nil
		in.mu.Unlock()
		cancel(nil)
		// Back where it was, unless a wake (or a switch) took it on.
		if in.engine.Step(from, "idle", enginestate.GivingBack) {
			in.reportEngine()
		}
	}()
	if h := in.cgroups; h != nil {
		if did, err := h.Reclaim(ctx, services.DefaultCgroupParent); err != nil {
			in.log.WithError(err).Warn("the engine's memory was not reclaimed")
		} else {
			in.log.WithField("how", did).Info("the engine's memory given back")
		}
	}
	debug.FreeOSMemory()
	if !stopped || ctx.Err() != nil || time.Since(in.giving.lastTrim) < trimEvery {
		return
	}
	in.giving.lastTrim = time.Now()
	trimmed, err := mounts.Trim("/var/lib/docker")
	if err != nil {
		in.log.WithError(err).Info("the data store's free blocks were not given back (trim)")
		return
	}
	in.log.WithField("mb", trimmed>>20).Info("the data store's free blocks given back (trim)")
}

// endGiveBack ends a give-back in progress and, with wait, waits for it:
// before a stopped engine starts again, and before the shutdown unmounts
// what it trims (a trim under way is waited for: the kernel cannot be
// asked to stop it). A thaw does not wait: a pause's give-back trims
// nothing, and what it has not reclaimed yet it leaves.
func (in *pid1) endGiveBack(wait bool) {
	in.mu.Lock()
	stop := in.giving.stop
	in.mu.Unlock()
	if stop != nil {
		stop()
	}
	if wait {
		in.giving.mu.Lock()
		in.giving.mu.Unlock()
	}
}

// trimEvery bounds how often the data store is trimmed.
const trimEvery = 5 * time.Minute

// runningContainers asks dockerd how many containers run.
func runningContainers(sock string) (int, error) {
	engine := engineclient.New(func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, sock) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list []struct{ ID string }
	if err := engine.Get(ctx, "/containers/json", &list); err != nil {
		return 0, err
	}
	return len(list), nil
}

// wake starts containerd and the services again, as at boot, or thaws a
// frozen engine, and returns once dockerd is ready, or why it is not (the
// engine then stays stopped, and the next wake tries again).
func (in *pid1) wake() error {
	in.engineOps.Lock()
	defer in.engineOps.Unlock()
	in.mu.Lock()
	closing := in.kube.closing
	in.mu.Unlock()
	if closing {
		return errors.New("ddinit is shutting down")
	}
	now := in.engine.Now()
	if now.State == enginestate.GivingBack {
		now.State = now.Back
	}
	if !in.engine.Step(enginestate.Waking, "", enginestate.Stopped, enginestate.Paused, enginestate.GivingBack, enginestate.WakeFailed) {
		return nil // running, or being replaced
	}
	in.reportEngine()
	in.endGiveBack(now.State != enginestate.Paused)
	if now.State == enginestate.Paused {
		start := time.Now()
		if err := in.thaw(); err != nil {
			in.moveEngine(enginestate.WakeFailed, err.Error())
			return err
		}
		in.log.WithField("ms", float64(time.Since(start).Microseconds())/1000).Info("engine thawed")
		in.moveEngine(enginestate.Running, "")
		return nil
	}
	marks := in.startWakeTimeline()
	start := time.Now()
	if err := in.startEngine(); err != nil {
		in.moveEngine(enginestate.WakeFailed, err.Error())
		in.log.WithError(err).Error("the engine did not wake")
		return err
	}
	in.log.WithField("ms", time.Since(start).Milliseconds()).Info("engine woken")
	in.moveEngine(enginestate.Running, "")
	marks.Mark("engine woken (ddinit run told)")
	marks.Close()
	return nil
}

// startEngine starts a new supervisor and waits for dockerd.
func (in *pid1) startEngine() error {
	sup, err := in.newSupervisor()
	if err != nil {
		return err
	}
	if err := sup.Start(); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	in.mu.Lock()
	in.sup = sup // the one stopped at the idle stop kept its logs readable until now
	in.mu.Unlock()
	in.clusterStarted(sup, in.runningCluster())
	deadline := in.cfg.SettingsDeadlineOr()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool { return st.Ready || st.LastExit != nil })
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("dockerd was not ready within %s", deadline)
	case err == nil && !st.Ready:
		err = errors.New("dockerd: " + lastWords(st.LastExit))
	}
	if err != nil {
		sup.Stop()
		return err
	}
	// Done at the first ready of the boot's own supervisor (awaitEngine),
	// unless this one replaced it before that.
	in.bg.Go(func(context.Context) { in.trustOnce() })
	return nil
}

// engineIdleStatus is what /status and /ping say of an engine stopped on
// purpose: idle (healthy), waking, or a wake that failed (not healthy);
// held false while the engine runs.
func (in *pid1) engineIdleStatus() (state, reason string, ready, held bool) {
	s := in.engine.Now()
	if s.State == enginestate.GivingBack {
		s.State = s.Back
	}
	switch s.State {
	case enginestate.Paused:
		return control.StateIdle, "paused (idle) since " + s.Since.Format(time.RFC3339), true, true
	case enginestate.Stopped:
		return control.StateIdle, "stopped (idle) since " + s.Since.Format(time.RFC3339), true, true
	case enginestate.Waking:
		return control.StateBooting, "waking the engine", false, true
	case enginestate.WakeFailed:
		return control.StateIdle, "waking the engine failed (the next client tries again): " + s.Reason, false, true
	}
	return "", "", false, false
}

// tellIdleStop tells ddinit run how long the engine may go unused before
// it is paused and before it is stopped: the settings', else the
// config's.
func (in *pid1) tellIdleStop() {
	doc := in.settings.View().Settings
	stop, pause := time.Duration(in.cfg.IdleStop), time.Duration(in.cfg.IdlePause)
	if v, ok := doc.IdleStopDuration(); ok {
		stop = v
	}
	if v, ok := doc.IdlePauseDuration(); ok {
		pause = v
	}
	if in.cgroups == nil {
		pause = 0 // nothing to freeze with
	}
	in.tell(wire.Message{Kind: wire.IdleTimes, Idle: &wire.Idle{Stop: stop, Pause: pause}})
}

// tellReach tells ddinit run what the settings say it makes reachable
// from the distro beyond published ports.
func (in *pid1) tellReach() {
	on := in.settings.View().Settings.HostNetworkPortsOn()
	in.tell(wire.Message{Kind: wire.ReachPlan, Reach: &wire.Reach{HostPorts: on}})
}

// engineHeld says whether the engine is stopped (a wake is a fresh start,
// which is a restart) or paused (a wake is a thaw; a restart or switch
// then still has to be done).
func (in *pid1) engineHeld() (stopped, paused bool) {
	s := in.engine.Now()
	if s.State == enginestate.GivingBack {
		s.State = s.Back
	}
	switch s.State {
	case enginestate.Stopped, enginestate.WakeFailed:
		return true, false
	case enginestate.Paused:
		return false, true
	}
	return false, false
}

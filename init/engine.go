package initd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/engineclient"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/transport"
)

// The engine on demand: ddinit run, which serves every socket clients
// use, decides when nobody has used the engine for idleStop and asks PID 1
// to stop it; PID 1 stops dockerd and containerd only if no container runs
// and Kubernetes is off. The namespace, its mounts, network and sockets
// stay. The first client after that makes ddinit run ask PID 1 to wake it:
// a new supervisor starts containerd and the services, as at boot.

const stateIdle = "idle"

// engineState is whether the engine was stopped on purpose (guarded by
// pid1.mu) and the one stop or wake that may run at a time.
type engineState struct {
	ops      sync.Mutex
	stopped  time.Time // zero while it runs
	paused   time.Time // zero unless frozen (idlePause)
	waking   bool
	wakeErr  string // why the last wake failed; the next one tries again
	lastTrim time.Time
	// giving is held while what an idle engine held is given back;
	// stopGiving (under in.mu) ends it early: a wake and the shutdown
	// end it, and wait for it, before they go on.
	giving     sync.Mutex
	stopGiving context.CancelFunc
}

// engineRequest is ddinit run asking PID 1 to stop the engine if it is
// idle, or to wake it; engineReply is the answer.
type engineRequest struct {
	ID int64  `json:"id"`
	Op string `json:"op"` // "pause-if-idle", "stop-if-idle" or "wake"
}

type engineReply struct {
	ID int64 `json:"id"`
	// Busy says why the engine is not idle after all (a container runs).
	Busy  string `json:"busy,omitempty"`
	Error string `json:"error,omitempty"`
}

// answerEngine (PID 1) does what ddinit run asks and answers it.
func (in *pid1) answerEngine(req engineRequest) {
	reply := engineReply{ID: req.ID}
	switch req.Op {
	case "pause-if-idle", "stop-if-idle":
		act, stopping := in.pauseIfIdle, false
		if req.Op == "stop-if-idle" {
			act, stopping = in.stopIfIdle, true
		}
		busy, did, err := act()
		reply.Busy = busy
		if err != nil {
			reply.Error = err.Error()
		}
		if did {
			// Given back once ddinit run knows, outside the engine's
			// operations; a wake ends it first.
			defer in.giveBack(stopping)
		}
	case "wake":
		if err := in.wake(); err != nil {
			reply.Error = err.Error()
		}
	default:
		reply.Error = fmt.Sprintf("no engine operation %q", req.Op)
	}
	in.tellLauncher(launcherMessage{Engine: &reply})
}

// stopIfIdle stops dockerd and then containerd, unless a container runs,
// Kubernetes is on, a settings change is being applied or the boot is not
// done: then busy says which.
func (in *pid1) stopIfIdle() (busy string, did bool, err error) {
	in.engine.ops.Lock()
	defer in.engine.ops.Unlock()
	if err := in.thaw(); err != nil {
		return "", false, err
	}
	in.mu.Lock()
	stopped, state, sup, sock := !in.engine.stopped.IsZero(), in.state, in.sup, in.dockerSocket
	in.mu.Unlock()
	if stopped {
		return "", false, nil
	}
	if busy := in.busy(state, sup, sock); busy != "" {
		return busy, false, nil
	}
	in.log.Info("the engine is idle: stopping dockerd and containerd")
	sup.Stop()
	// dockerd's next start finds the network as a boot leaves it: it
	// makes its bridge and rules again from its own store either way.
	if err := network.ClearEngine(in.reaper); err != nil {
		in.log.WithError(err).Info("what dockerd left in the network stays; its next start clears it")
	}
	in.mu.Lock()
	in.engine.stopped, in.engine.wakeErr = time.Now(), ""
	in.mu.Unlock()
	in.log.Info("engine stopped (idle)")
	running := false
	in.tellLauncher(launcherMessage{EngineRunning: &running})
	return "", true, nil
}

// busy says why the engine is not idle after all: not running, a
// container runs, Kubernetes is on, settings are being applied.
func (in *pid1) busy(state string, sup *services.Supervisor, sock string) string {
	switch {
	case state != stateRunning || sup == nil:
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
	in.engine.ops.Lock()
	defer in.engine.ops.Unlock()
	in.mu.Lock()
	stopped, paused, state, sup, sock, h := !in.engine.stopped.IsZero(), !in.engine.paused.IsZero(), in.state, in.sup, in.dockerSocket, in.cgroups
	in.mu.Unlock()
	if stopped || paused {
		return "", false, nil
	}
	if h == nil {
		return "", false, errors.New("no cgroup hierarchy: the engine cannot be paused")
	}
	if busy := in.busy(state, sup, sock); busy != "" {
		return busy, false, nil
	}
	sup.Rest(true)
	if err := h.Freeze(services.DefaultCgroupParent, true, 5*time.Second); err != nil {
		h.Freeze(services.DefaultCgroupParent, false, 5*time.Second)
		sup.Rest(false)
		return "", false, err
	}
	in.mu.Lock()
	in.engine.paused, in.engine.wakeErr = time.Now(), ""
	in.mu.Unlock()
	in.log.Info("engine paused (idle): its cgroup is frozen")
	return "", true, nil
}

// thaw unfreezes a paused engine (in.engine.ops held).
func (in *pid1) thaw() error {
	in.mu.Lock()
	paused, sup, h := !in.engine.paused.IsZero(), in.sup, in.cgroups
	in.mu.Unlock()
	if !paused {
		return nil
	}
	if err := h.Freeze(services.DefaultCgroupParent, false, 5*time.Second); err != nil {
		return err
	}
	sup.Rest(false)
	in.mu.Lock()
	in.engine.paused = time.Time{}
	in.mu.Unlock()
	return nil
}

// giveBack returns what an idle engine held: the memory its cgroups were
// charged (v2 memory.reclaim; v1: memory.force_empty on the cgroups left
// empty: after a stop, all of them) and ddinit's own free heap; after a
// stop also the data store's free blocks (FITRIM), at most every
// trimEvery.
func (in *pid1) giveBack(stopped bool) {
	in.engine.giving.Lock()
	defer in.engine.giving.Unlock()
	ctx, cancel := context.WithCancelCause(context.Background())
	in.mu.Lock()
	in.engine.stopGiving = func() { cancel(errors.New("the engine is wanted")) }
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.engine.stopGiving = nil
		in.mu.Unlock()
		cancel(nil)
	}()
	if h := in.cgroups; h != nil {
		if did, err := h.Reclaim(ctx, services.DefaultCgroupParent); err != nil {
			in.log.WithError(err).Warn("the engine's memory was not reclaimed")
		} else {
			in.log.WithField("how", did).Info("the engine's memory given back")
		}
	}
	debug.FreeOSMemory()
	if !stopped {
		return
	}
	// Never while the engine runs: not if a wake has begun.
	in.mu.Lock()
	due := ctx.Err() == nil && !in.engine.stopped.IsZero() && !in.engine.waking && time.Since(in.engine.lastTrim) >= trimEvery
	if due {
		in.engine.lastTrim = time.Now()
	}
	in.mu.Unlock()
	if !due {
		return
	}
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
	stop := in.engine.stopGiving
	in.mu.Unlock()
	if stop != nil {
		stop()
	}
	if wait {
		in.engine.giving.Lock()
		in.engine.giving.Unlock()
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

// wake starts containerd and the services again, as at boot, and returns
// once dockerd is ready, or why it is not (the engine then stays stopped,
// and the next wake tries again).
func (in *pid1) wake() error {
	in.engine.ops.Lock()
	defer in.engine.ops.Unlock()
	in.mu.Lock()
	paused := !in.engine.paused.IsZero()
	in.mu.Unlock()
	in.endGiveBack(!paused)
	if paused {
		start := time.Now()
		if err := in.thaw(); err != nil {
			return err
		}
		in.log.WithField("ms", float64(time.Since(start).Microseconds())/1000).Info("engine thawed")
		running := true
		in.tellLauncher(launcherMessage{EngineRunning: &running})
		return nil
	}
	in.mu.Lock()
	if in.engine.stopped.IsZero() {
		in.mu.Unlock()
		return nil
	}
	in.engine.waking = true
	in.mu.Unlock()
	marks := in.startWakeTimeline()
	start := time.Now()
	err := in.startEngine()
	in.mu.Lock()
	in.engine.waking = false
	if err != nil {
		in.engine.wakeErr = err.Error()
	} else {
		in.engine.stopped, in.engine.wakeErr = time.Time{}, ""
	}
	in.mu.Unlock()
	if err != nil {
		in.log.WithError(err).Error("the engine did not wake")
		return err
	}
	in.log.WithField("ms", time.Since(start).Milliseconds()).Info("engine woken")
	running := true
	in.tellLauncher(launcherMessage{EngineRunning: &running})
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
	old := in.sup
	in.sup = sup
	in.mu.Unlock()
	_ = old // stopped at the idle stop; its logs stay readable until now
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.settingsDeadline())
	defer cancel()
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool { return st.Ready || st.LastExit != nil })
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("dockerd was not ready within %s", in.cfg.settingsDeadline())
	case err == nil && !st.Ready:
		err = errors.New("dockerd: " + lastWords(st.LastExit))
	}
	if err != nil {
		sup.Stop()
		return err
	}
	return nil
}

// engineIdleStatus is what /status and /ping say of an engine stopped on
// purpose: idle (healthy), waking, or a wake that failed (not healthy);
// held false while the engine runs.
func (in *pid1) engineIdleStatus() (state, reason string, ready, held bool) {
	in.mu.Lock()
	since, paused, waking, wakeErr := in.engine.stopped, in.engine.paused, in.engine.waking, in.engine.wakeErr
	in.mu.Unlock()
	switch {
	case !paused.IsZero():
		return stateIdle, "paused (idle) since " + paused.Format(time.RFC3339), true, true
	case since.IsZero():
		return "", "", false, false
	case waking:
		return stateBooting, "waking the engine", false, true
	case wakeErr != "":
		return stateIdle, "waking the engine failed (the next client tries again): " + wakeErr, false, true
	}
	return stateIdle, "stopped (idle) since " + since.Format(time.RFC3339), true, true
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
	in.tellLauncher(launcherMessage{IdleStop: &stop, IdlePause: &pause})
}

// askPID1 (ddinit run) sends PID 1 an engine request and waits for the
// answer (a wake waits for dockerd's start).
func (l *launcher) askPID1(op string) (engineReply, error) {
	id, ch, forget := l.calls.begin()
	b, _ := json.Marshal(drivesMessage{Engine: &engineRequest{ID: id, Op: op}}) // plain fields always encode
	l.mu.Lock()
	conn := l.drives
	l.mu.Unlock()
	if conn == nil {
		forget()
		return engineReply{}, errors.New("PID 1 is not running")
	}
	if _, _, err := conn.WriteMsgUnix(b, nil, nil); err != nil {
		forget()
		return engineReply{}, fmt.Errorf("ask PID 1 to %s the engine: %w", op, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-time.After(holdFor + time.Minute):
		forget()
		return engineReply{}, fmt.Errorf("PID 1 did not answer a request to %s the engine", op)
	}
}

// engineHeld says whether the engine is stopped (a wake is a fresh start,
// which is a restart) or paused (a wake is a thaw; a restart or switch
// then still has to be done).
func (in *pid1) engineHeld() (stopped, paused bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return !in.engine.stopped.IsZero(), !in.engine.paused.IsZero()
}

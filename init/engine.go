package initd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/vsock"
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
	ops     sync.Mutex
	stopped time.Time // zero while it runs
	waking  bool
	wakeErr string // why the last wake failed; the next one tries again
}

// engineRequest is ddinit run asking PID 1 to stop the engine if it is
// idle, or to wake it; engineReply is the answer.
type engineRequest struct {
	ID int64  `json:"id"`
	Op string `json:"op"` // "stop-if-idle" or "wake"
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
	case "stop-if-idle":
		busy, err := in.stopIfIdle()
		reply.Busy = busy
		if err != nil {
			reply.Error = err.Error()
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
func (in *pid1) stopIfIdle() (busy string, err error) {
	in.engine.ops.Lock()
	defer in.engine.ops.Unlock()
	in.mu.Lock()
	stopped, state, sup, sock := !in.engine.stopped.IsZero(), in.state, in.sup, in.dockerSocket
	in.mu.Unlock()
	switch {
	case stopped:
		return "", nil
	case state != stateRunning || sup == nil:
		return "the engine is " + state, nil
	case in.settings.KubernetesOn():
		return "Kubernetes is on", nil
	case in.settings.View().Applying != "":
		return "a settings change is being applied", nil
	}
	n, err := runningContainers(sock)
	if err != nil {
		return "dockerd does not say which containers run: " + err.Error(), nil
	}
	if n > 0 {
		return fmt.Sprintf("%d container(s) running", n), nil
	}
	in.log.Info("the engine is idle: stopping dockerd and containerd")
	sup.Stop()
	in.mu.Lock()
	in.engine.stopped, in.engine.wakeErr = time.Now(), ""
	in.mu.Unlock()
	in.log.Info("engine stopped (idle)")
	running := false
	in.tellLauncher(launcherMessage{EngineRunning: &running})
	return "", nil
}

// runningContainers asks dockerd how many containers run.
func runningContainers(sock string) (int, error) {
	engine := dockerproxy.NewEngine(func(ctx context.Context) (net.Conn, error) { return vsock.DialUnix(ctx, sock) })
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
	if in.engine.stopped.IsZero() {
		in.mu.Unlock()
		return nil
	}
	in.engine.waking = true
	in.mu.Unlock()
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
	since, waking, wakeErr := in.engine.stopped, in.engine.waking, in.engine.wakeErr
	in.mu.Unlock()
	switch {
	case since.IsZero():
		return "", "", false, false
	case waking:
		return stateBooting, "waking the engine", false, true
	case wakeErr != "":
		return stateIdle, "waking the engine failed (the next client tries again): " + wakeErr, false, true
	}
	return stateIdle, "stopped (idle) since " + since.Format(time.RFC3339), true, true
}

// tellIdleStop tells ddinit run how long the engine may go unused: the
// settings' idleStop, else the config's.
func (in *pid1) tellIdleStop() {
	d := time.Duration(in.cfg.IdleStop)
	if v, ok := in.settings.View().Settings.IdleStopDuration(); ok {
		d = v
	}
	in.tellLauncher(launcherMessage{IdleStop: &d})
}

// engineCalls (ddinit run) are the engine requests sent to PID 1 that
// wait for their answer.
type engineCalls struct {
	mu      sync.Mutex
	next    int64
	waiting map[int64]chan engineReply
}

func (c *engineCalls) answered(r engineReply) {
	c.mu.Lock()
	ch := c.waiting[r.ID]
	delete(c.waiting, r.ID)
	c.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// askPID1 (ddinit run) sends PID 1 an engine request and waits for the
// answer (a wake waits for dockerd's start).
func (l *launcher) askPID1(op string) (engineReply, error) {
	c := &l.calls
	ch := make(chan engineReply, 1)
	c.mu.Lock()
	c.next++
	id := c.next
	if c.waiting == nil {
		c.waiting = map[int64]chan engineReply{}
	}
	c.waiting[id] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}
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

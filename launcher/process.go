package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/steps"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/wire"
	"golang.org/x/sys/unix"
)

// child is PID 1 as ddinit run holds it: the process, and the streams
// it reports on.
type child struct {
	cmd             *exec.Cmd
	pid             int
	started, exited time.Time
	relayed         chan struct{} // closed when its log ends
	followed        chan struct{} // closed when its socket ends
}

// startPID1 re-executes ddinit as PID 1 of new mount, pid, net, ipc and
// uts namespaces, handing it the handoff (fd 3), its end of the socket
// (fd 4) and the control API's sockets (fd 5…), which it serves from its
// first moment, before the root even exists.
func (l *launcher) startPID1() (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find ddinit's own binary: %w", err)
	}
	var pipes [2][2]*os.File // handoff, log: read and write ends
	for i := range pipes {
		if pipes[i][0], pipes[i][1], err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("pipes to PID 1: %w", err)
		}
	}
	handR, handW, logR, logW := pipes[0][0], pipes[0][1], pipes[1][0], pipes[1][1]
	here, there, err := wire.Pair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, wire.PID1Argument)
	cmd.Args[0] = "ddinit"
	cmd.ExtraFiles = append([]*os.File{handR, there}, l.controlFiles...)
	cmd.Stderr = logW
	cmd.Env = []string{"PATH=" + services.DefaultPath, "HOME=/root"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		// If ddinit run dies, PID 1 dies, and the kernel ends the namespace.
		Pdeathsig: unix.SIGKILL,
	}
	c := &child{cmd: cmd, started: time.Now(), relayed: make(chan struct{}), followed: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		here.Close()
		there.Close()
		return nil, fmt.Errorf("start PID 1 in new namespaces: %w", err)
	}
	// PID 1 holds its ends now. The control sockets stay open here too:
	// a PID 1 that replaces this one gets them.
	for _, f := range []*os.File{handR, logW, there} {
		f.Close()
	}
	conn, err := wire.NewConn(here)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	c.pid = cmd.Process.Pid
	l.mu.Lock()
	l.conn, l.replacing.engineUp = conn, false
	l.replacing.generation++
	gen := l.replacing.generation
	l.mu.Unlock()
	first := "ddinit run started"
	if l.replacing.switching != "" {
		first = "the PID 1 replaced exited"
	}
	l.answered.Store(false)
	if err := json.NewEncoder(handW).Encode(l.handoff(c, first)); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("hand PID 1 its config: %w", err)
	}
	handW.Close()
	l.log.WithField("pid", c.pid).Info("PID 1 started in new namespaces")
	go func() {
		logs.Relay(logR, l.log)
		close(c.relayed)
	}()
	go func() {
		l.followPID1(conn, c, gen)
		close(c.followed)
	}()
	return c, nil
}

// handoff is what this boot's PID 1 is given.
func (l *launcher) handoff(c *child, first string) wire.Handoff {
	return wire.Handoff{
		Config:    l.cfg,
		HostPID:   c.pid,
		Marks:     []timeline.Mark{{Event: first, At: l.begun}, {Event: "starting PID 1 (new namespaces)", At: c.started}},
		Switching: l.replacing.switching,
		PackTrial: l.replacing.packTrial,
		PackKeep:  l.replacing.packKeep,
		Recovered: l.ds.Recovered,
	}
}

// relayUntilExit passes SIGTERM and SIGINT on to PID 1 until it exits.
func (l *launcher) relayUntilExit(c *child, sigs <-chan os.Signal) error {
	exited := make(chan error, 1)
	go func() { exited <- c.cmd.Wait() }()
	// A PID 1 of a pid namespace drops signals it has no handler for yet
	// (one just started): a stop is told again every second until it goes.
	var again <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			l.mu.Lock()
			l.replacing.stopAsked = true // no next boot, whatever was under way
			l.mu.Unlock()
			l.log.WithField("signal", sig.String()).Info("stopping")
			c.cmd.Process.Signal(unix.SIGTERM)
			if again == nil {
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				again = tick.C
			}
		case <-again:
			c.cmd.Process.Signal(unix.SIGTERM)
		case err := <-exited:
			l.pid1Gone()
			<-c.relayed
			<-c.followed
			return err
		}
	}
}

// exitStatus is PID 1's exit status, and the boot failure it reported.
func (l *launcher) exitStatus(c *child, waitErr error) (int, error) {
	code := 0
	if waitErr != nil {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return 1, waitErr
		}
		ws := ee.Sys().(syscall.WaitStatus)
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	l.log.WithField("ranFor", time.Since(c.started).Round(time.Millisecond).String()).Debug("PID 1 exited")
	l.mu.Lock()
	bootErr := l.bootError
	l.mu.Unlock()
	if bootErr != "" {
		return code, errors.New(bootErr)
	}
	if code != 0 {
		return code, fmt.Errorf("PID 1 exited with status %d; see %s", code, filepath.Join(l.cfg.DataDir, "log/ddinit.log"))
	}
	return code, nil
}

// followPID1 handles what PID 1 of generation gen reports, in order,
// until its socket ends: its sockets (which are then exposed: the socket
// steps run here), its boot's and its pack's fate, the engine's states,
// the idle times and the proxy plan, the answers to ddinit run's engine
// requests, and its pack requests (answered in the background: a pack is
// copied and hashed, minutes).
func (l *launcher) followPID1(conn *wire.Conn, c *child, gen int) {
	log := l.log.WithField("component", "pid1")
	// Requests PID 1 had not answered when it went get their answer now:
	// none will come.
	defer l.calls.Abandon(func(id int64) wire.Reply {
		return wire.Reply{ID: id, Err: &wire.Error{Kind: "unavailable", Message: "PID 1 went away"}}
	})
	for {
		m, files, err := conn.Receive()
		for _, f := range files {
			f.Close() // PID 1 sends none
		}
		var garbled *wire.GarbledError
		switch {
		case errors.As(err, &garbled):
			log.WithError(err).Warn("a garbled message from PID 1")
			continue
		case err != nil:
			return
		}
		switch m.Kind {
		case wire.Sockets:
			// PID 1's root is in place: its iptables can set up NAT, its
			// /dev and drives can follow the distro's, its sockets be
			// exposed.
			if err := steps.Run(&l.steps, socketSteps, socketArgs{l: l, pid: c.pid, sockets: m.Sockets}); err != nil {
				l.mu.Lock()
				l.bootError = err.Error()
				l.mu.Unlock()
				c.cmd.Process.Signal(unix.SIGTERM)
			}
		case wire.BootFailed:
			l.mu.Lock()
			l.bootError = m.Err.Message
			if l.replacing.packTrial {
				l.replacing.packFailure = m.Err.Message
			}
			l.mu.Unlock()
		case wire.PackProved:
			l.packProved()
		case wire.PackFailed:
			l.mu.Lock()
			l.replacing.packFailure = m.Err.Message
			l.mu.Unlock()
		case wire.EngineReady:
			l.engineReady()
		case wire.ShutdownAsked:
			l.mu.Lock()
			l.replacing.stopAsked = true // no next PID 1, whatever was under way
			l.mu.Unlock()
		case wire.ControlClosed:
			l.pid1Gone() // its pack requests are no longer answered
			if why := l.nextBootReason(); why != "" {
				l.standIn(why)
			}
		case wire.EngineState:
			l.hold.mirror(*m.Engine)
		case wire.IdleTimes:
			l.hold.setIdle(m.Idle.Stop, m.Idle.Pause)
		case wire.Proxy:
			l.relays.apply(*m.Proxy, c.pid, log)
		case wire.EngineReply:
			l.calls.Answered(m.Reply.ID, *m.Reply)
		case wire.KubernetesState:
			l.kubeState(*m.Kube)
		case wire.ReachPlan:
			l.reachPlan(*m.Reach)
		case wire.PackRequest:
			ask := *m.Pack
			l.bg.Go(func(_ context.Context) {
				l.answerPack(gen, conn, l.usePack(ask, gen), ask.Use.Live)
			})
		default:
			log.WithField("kind", m.Kind).Warn("a message from PID 1 of a kind ddinit run does not take")
		}
	}
}

// tellPID1 sends the running PID 1 a message (and files beside it); it
// reports whether it went.
func (l *launcher) tellPID1(m wire.Message, files ...*os.File) bool {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn == nil {
		return false
	}
	if err := conn.Send(m, files...); err != nil {
		l.log.WithError(err).WithField("kind", m.Kind).Debug("a message to PID 1 was not sent")
		return false
	}
	return true
}

// askPID1 sends PID 1 an engine request and waits for the answer (a wake
// waits for dockerd's start).
func (l *launcher) askPID1(op wire.Op) (wire.Reply, error) {
	id, ch, forget := l.calls.Begin()
	if !l.tellPID1(wire.Message{Kind: wire.EngineRequest, Request: &wire.Request{ID: id, Op: op}}) {
		forget()
		return wire.Reply{}, fmt.Errorf("ask PID 1 to %s the engine: PID 1 is not running", op)
	}
	t := time.NewTimer(holdFor + time.Minute)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-t.C:
		forget()
		return wire.Reply{}, fmt.Errorf("PID 1 did not answer a request to %s the engine", op)
	}
}

package launcher

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
	"golang.org/x/sys/unix"
)

// A live version-pack switch (PUT /version-pack with "live"): overlay
// layers cannot change under a running root, and containerd itself comes
// from the pack, so ddinit run replaces PID 1 within the same run. What
// clients connect to stays: the exposed sockets keep listening and hold
// every new connection (the holder, with the switch as its reason) until
// the new engine is ready; the control sockets stay open, answered by the
// old PID 1 while it stops, by ddinit run while there is none, and by the
// new one from its first moment — /ping is 503 naming the switch
// throughout. The new pack boots on trial: if its engine does not come
// up, the previous pack boots again the same way (a rollback).

// maxControlConns bounds the control API's connections on one socket
// while ddinit run stands in, as PID 1 bounds them.
const maxControlConns = 256

// saveChoice records a pack request's choice for the PID 1 of generation
// gen, checked again under the launcher's lock as it is saved (the pack
// was hashed meanwhile): refused once that PID 1 is going, or while a
// live switch is under way; a live one also claims the switch.
func (l *launcher) saveChoice(gen int, live bool, save func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.packRequestAllowed(gen, live); err != nil {
		return err
	}
	if err := save(); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	if live {
		l.replacing.switchTo = "switching version pack"
	}
	return nil
}

// answerPack hands PID 1 of generation gen its pack request's answer over
// conn, its own socket, and, for a live switch chosen, begins replacing
// it: held dials from now on, and PID 1 told to shut down, saying why. A
// PID 1 already going gets nothing.
func (l *launcher) answerPack(gen int, conn *wire.Conn, reply wire.PackAnswer, live bool) {
	l.mu.Lock()
	if l.replacing.generation != gen {
		l.mu.Unlock()
		return
	}
	var why string
	if live && reply.Err == nil {
		why = "switching version pack to " + packName(reply.Packs.Next)
		l.replacing.switchTo = why
	}
	l.mu.Unlock()
	if why != "" {
		l.log.WithField("pack", reply.Packs.Next.Path).Info("switching the version pack live: PID 1 is replaced, clients are held meanwhile")
		l.hold.suspend(why)
	}
	conn.Send(wire.Message{Kind: wire.PackReply, PackAnswer: &reply})
	if why != "" && conn.Send(wire.Message{Kind: wire.Replace, Reason: why}) != nil {
		// PID 1 is going anyway (its socket is gone): the next boot
		// follows its exit all the same.
		l.log.Warn("PID 1 was not told of the switch")
	}
}

// pid1Gone marks the running PID 1 as going (it closed the control
// sockets, or exited): its pack requests are no longer answered.
func (l *launcher) pid1Gone() {
	l.mu.Lock()
	l.replacing.generation++
	l.mu.Unlock()
}

// packRequestAllowed refuses a pack request of a PID 1 other than the
// running one (gen), any while a live switch is under way, and a live one
// while ddinit is stopping; l.mu held.
func (l *launcher) packRequestAllowed(gen int, live bool) error {
	switch {
	case l.replacing.generation != gen:
		return fmt.Errorf("%w: the engine is being replaced or stopped: ask again", errdefs.ErrConflict)
	case l.replacing.switchTo != "" || l.replacing.switching != "" && !l.replacing.engineUp:
		return fmt.Errorf("%w: a live version-pack switch is under way", errdefs.ErrConflict)
	case live && l.replacing.stopAsked:
		return fmt.Errorf("%w: ddinit is stopping", errdefs.ErrConflict)
	}
	return nil
}

// stopRequested reports whether ddinit run ends with this PID 1.
func (l *launcher) stopRequested() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.replacing.stopAsked
}

// nextBootReason is why another PID 1 boots once this one has exited (a
// live switch, a rollback), or "" when ddinit run then ends.
func (l *launcher) nextBootReason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.replacing.stopAsked:
		return ""
	case l.replacing.switchTo != "":
		return l.replacing.switchTo
	case l.replacing.packFailure != "":
		return "rolling back to the previous version pack"
	}
	return ""
}

// takeNextBoot reports whether another PID 1 boots, and why, once the
// rollback (if any) is recorded.
func (l *launcher) takeNextBoot(rolledBack bool) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	why := l.replacing.switchTo
	l.replacing.switchTo = ""
	switch {
	case l.replacing.stopAsked:
		return "", false
	case why != "":
		// A pack on trial that failed as it was replaced: the switch's
		// pack boots, as chosen.
		return why, true
	case rolledBack:
		return "rolling back to the previous version pack", true
	}
	return "", false
}

// engineReady (ddinit run): the engine of this PID 1 answers. Dials held
// since an earlier PID 1 went away are passed on now.
func (l *launcher) engineReady() {
	l.mu.Lock()
	// The PID 1 being replaced, or one whose pack failed its trial: its
	// engine is on its way out, the clients stay held for the next.
	replacing := l.replacing.switchTo != "" || l.replacing.packFailure != ""
	l.replacing.engineUp = !replacing
	l.mu.Unlock()
	if replacing {
		return // the PID 1 being replaced: its engine is on its way out
	}
	if l.hold.switching() {
		l.log.Info("the new engine is ready: held clients passed on")
		l.hold.open()
	}
}

// standIn answers the control sockets while no PID 1 does (between two),
// until the next PID 1 is started: /ping 503 with why. Once: a second call
// finds it answering.
func (l *launcher) standIn(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.replacing.standing != nil {
		return
	}
	var ls []net.Listener
	for i, s := range l.cfg.Control {
		a, err := transport.Parse(s)
		if err != nil {
			continue // refused when the sockets were opened
		}
		// A copy: the socket itself stays open for the next PID 1.
		fd, err := unix.FcntlInt(l.controlFiles[i].Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			l.log.WithError(err).Warn("the control API waits for the next PID 1 unanswered")
			continue
		}
		ln, err := transport.GuardedFileListener(a, os.NewFile(uintptr(fd), s), transport.PeerPolicy{AllowLocal: l.cfg.VsockAllowLocal}, maxControlConns, l.log)
		if err != nil {
			l.log.WithError(err).Warn("the control API waits for the next PID 1 unanswered")
			continue
		}
		ls = append(ls, ln)
	}
	srv := &control.Server{Backend: standInBackend{l: l, why: why, since: time.Now()}, Log: l.log.WithField("component", "control"), StandIn: true}
	srv.Serve(ls...)
	l.replacing.standing = srv
}

// endStandIn stops answering for PID 1: the next one does, or nobody.
func (l *launcher) endStandIn() {
	l.mu.Lock()
	srv := l.replacing.standing
	l.replacing.standing = nil
	l.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// standInBackend is the control API's backend while ddinit run stands in
// for PID 1: not healthy, saying why; a shutdown ends ddinit run instead
// of the next boot.
type standInBackend struct {
	l     *launcher
	why   string
	since time.Time
}

func (b standInBackend) Health() control.Health {
	return control.Health{State: control.StateRestarting, Reason: b.why}
}

func (b standInBackend) Status() control.Status {
	return control.Status{Version: config.Version, State: control.StateRestarting, Reason: b.why, Started: b.since, Uptime: "0s"}
}

func (b standInBackend) Shutdown() {
	b.l.mu.Lock()
	b.l.replacing.stopAsked = true
	b.l.mu.Unlock()
	b.l.log.Info("shutdown asked between two boots: no next boot")
}

var errStandIn = fmt.Errorf("%w: PID 1 is being replaced", errdefs.ErrUnavailable)

func (standInBackend) Logs(string, int, bool) ([]control.LogLine, <-chan control.LogLine, func(), error) {
	return nil, nil, nil, errStandIn
}
func (standInBackend) Restart(string) error        { return errStandIn }
func (standInBackend) Diagnostics(io.Writer) error { return errStandIn }
func (standInBackend) Settings() control.Settings  { return control.Settings{} }
func (standInBackend) PutSettings([]byte) (control.Settings, error) {
	return control.Settings{}, errStandIn
}
func (standInBackend) UsePack(control.UsePack) (control.PackState, error) {
	return control.PackState{}, errStandIn
}
func (standInBackend) ResetKubernetes() error      { return errStandIn }
func (standInBackend) Kubeconfig() ([]byte, error) { return nil, errStandIn }

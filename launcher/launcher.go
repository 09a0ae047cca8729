package launcher

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/steps"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Run is `ddinit run`: it starts PID 1 in new namespaces, relays
// signals to it, exposes its sockets and returns its exit status, or the
// error that ended the boot, naming the cause.
func Run(cfg config.Config, stderr io.Writer) (int, error) {
	cfg.Defaults()
	fail := func(err error) (int, error) { return 1, err }
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	level, err := logrus.ParseLevel(cfg.LogLevel)
	if err != nil {
		return fail(fmt.Errorf("logLevel %q: %w", cfg.LogLevel, err))
	}
	// Until the log step has opened the data store's log, lines go to
	// stderr only (a failure to lock or open it is stderr's to tell).
	l := &launcher{user: cfg, cfg: cfg, log: logs.New("ddinit", stderr, nil, level), begun: time.Now()}
	l.steps = steps.Runner{Log: l.log, What: "launch step"}
	l.hold = newHolder(l.askPID1, l.log.WithField("component", "engine"))
	l.kube = l.newKube()
	if err := steps.Run(&l.steps, holdSteps, l); err != nil {
		l.steps.Undo()
		return fail(err)
	}
	// Held for the whole life, released after the last line is written.
	held := l.steps.Take()
	defer held.Run()
	code, err := l.run()
	if err != nil {
		l.log.WithError(err).Error("boot failed")
		return fail(err)
	}
	l.log.WithField("status", code).Info("ddinit exited")
	return code, nil
}

// run is ddinit run's life: start PID 1 in new namespaces, relay signals
// to it while following what it reports, clean up after it, and return
// its exit status. Another PID 1 follows in the same run when the version
// pack changes: a live switch, or a pack on trial that did not bring the
// engine up (the previous one boots again).
func (l *launcher) run() (int, error) {
	defer l.endStandIn()
	sigs := make(chan os.Signal, 4)
	// Relayed from before the first start, so a signal during it is not
	// lost; one between two PID 1s means no next one.
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(sigs)
	for {
		l.choosePack()
		code, err := l.runOnce(sigs)
		why, again := l.takeNextBoot(l.rollBack())
		select {
		case sig := <-sigs:
			l.log.WithField("signal", sig.String()).Info("stopping: no next boot")
			again = false
		default:
		}
		if !again {
			return code, err
		}
		// The next boot's timeline starts where the last PID 1 exited.
		l.begun = time.Now()
		if c := l.child; c != nil && !c.exited.IsZero() {
			l.begun = c.exited
		}
		l.replacing.switching = why
	}
}

// runOnce is one boot of PID 1, from its start to its exit.
func (l *launcher) runOnce(sigs <-chan os.Signal) (int, error) {
	defer l.steps.Undo() // what a failed start set up
	// The control sockets are the next PID 1's from its first moment:
	// ddinit run no longer answers on them (it did if this PID 1 replaces
	// another), and a shutdown it answered meanwhile means none starts.
	l.endStandIn()
	select {
	case sig := <-sigs: // between two PID 1s: none starts
		l.mu.Lock()
		l.replacing.stopAsked = true
		l.mu.Unlock()
		l.log.WithField("signal", sig.String()).Info("stopping")
	default:
	}
	if l.stopRequested() {
		l.log.Info("shutdown asked before the next PID 1 started: none starts")
		return 0, nil
	}
	before := runtime.NumGoroutine()
	if err := steps.Run(&l.steps, startSteps, l); err != nil {
		return 1, err
	}
	child := l.child
	waitErr := l.relayUntilExit(child, sigs)
	child.exited = time.Now()
	if why := l.nextBootReason(); why != "" {
		// Until the next PID 1 answers on them, ddinit run does (from
		// PID 1's ControlClosed on, or from its exit): no client of the
		// control API is refused or left waiting.
		l.standIn(why)
	}
	l.steps.Undo()
	// Every goroutine a step started has ended with its undo: what is
	// left is what there was before PID 1 (a leak shows here).
	l.log.WithFields(logrus.Fields{"goroutines": runtime.NumGoroutine(), "before": before}).Debug("every launch step undone")
	return l.exitStatus(child, waitErr)
}

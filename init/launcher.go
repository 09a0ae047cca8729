package initd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Run is `ddinit run`: it starts PID 1 in new namespaces, relays
// signals to it, exposes its sockets and returns its exit status, or the
// error that ended the boot, naming the cause.
func Run(cfg Config, stderr io.Writer) (int, error) {
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
	l := &launcher{cfg: cfg, log: logs.New("ddinit", stderr, nil, level), begun: time.Now()}
	l.hold = newHolder(l.askPID1, l.log.WithField("component", "engine"))
	if err := l.runSteps(holdSteps, 0, nil); err != nil {
		l.undoAll()
		return fail(err)
	}
	// Held for the whole life, released after the last line is written.
	held := l.takeUndos()
	defer held.undo(l.log)
	code, err := l.run()
	if err != nil {
		l.log.WithError(err).Error("boot failed")
		return fail(err)
	}
	l.log.WithField("status", code).Info("ddinit exited")
	return code, nil
}

type launcher struct {
	cfg Config
	log *logrus.Entry
	ds  *mounts.DataStore // once locked

	mu            sync.Mutex
	done          undoer // the steps done, to undo in reverse
	forwarders    []*transport.Forwarder
	bootError     string
	unixSockets   []string // control sockets to remove at exit
	link          *network.Link
	names         *localNames        // host.docker.internal and gateway.docker.internal, once linked
	relays        relays             // the proxy plan PID 1 tells: relays and the variables
	hold          *holder            // between the exposed sockets and the engine: on demand
	calls         calls[engineReply] // engine requests to PID 1 awaiting their answer
	stopPublisher func()
	publisher     *network.Publisher
	rootDir       *os.File // PID 1's root, for iptables after PID 1 is gone
	drives        *net.UnixConn

	// Background work that lasts as long as PID 1 (settling, the idle
	// heap, the binary for the distros): stopped and awaited at cleanup.
	serving sync.WaitGroup // the exposed sockets' forwarders

	controlFiles []*os.File // the control sockets, for PID 1
	// begun is when this boot began (ddinit run's start, or the rollback's
	// boot); answered, whether an exposed socket has answered since.
	begun       time.Time
	answered    atomic.Bool
	packFailure string // why the pack on trial failed: roll back
	child       *child // PID 1, once started
	// switchTo is why PID 1 is being replaced (a live switch), until the
	// next one starts; stopAsked, that ddinit run ends with this PID 1
	// (a signal, a shutdown between two): no next boot. engineUp: this
	// PID 1's engine has been ready.
	switchTo  string
	stopAsked bool
	engineUp  bool
	// generation counts the PID 1s started: a pack request is answered to,
	// and switches, the PID 1 that asked only.
	generation int
	packMu     sync.Mutex      // one pack request at a time
	standing   *control.Server // answering the control sockets between two PID 1s
	// targets are the exposed sockets' paths, through the running PID 1's
	// root: dials follow them from one PID 1 to the next.
	targets map[string]string

	bgCtx  context.Context
	bgStop context.CancelFunc
	bg     sync.WaitGroup
}

// background runs fn until cleanup, which stops it and waits for it.
func (l *launcher) background(fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bgStop == nil {
		var ctx context.Context
		ctx, l.bgStop = context.WithCancel(context.Background())
		l.bgCtx = ctx
	}
	l.bg.Add(1)
	go func() {
		defer l.bg.Done()
		fn(l.bgCtx)
	}()
}

func (l *launcher) stopBackground() {
	l.mu.Lock()
	stop := l.bgStop
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
	l.bg.Wait()
	l.mu.Lock()
	l.bgStop, l.bgCtx = nil, nil // a boot after a rollback starts anew
	l.mu.Unlock()
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
		l.cfg.Switching = why
	}
}

// runOnce is one boot of PID 1, from its start to its exit.
func (l *launcher) runOnce(sigs <-chan os.Signal) (int, error) {
	defer l.undoAll() // what a failed start set up
	// The control sockets are the next PID 1's from its first moment:
	// ddinit run no longer answers on them (it did if this PID 1 replaces
	// another), and a shutdown it answered meanwhile means none starts.
	l.endStandIn()
	select {
	case sig := <-sigs: // between two PID 1s: none starts
		l.mu.Lock()
		l.stopAsked = true
		l.mu.Unlock()
		l.log.WithField("signal", sig.String()).Info("stopping")
	default:
	}
	if l.stopRequested() {
		l.log.Info("shutdown asked before the next PID 1 started: none starts")
		return 0, nil
	}
	before := runtime.NumGoroutine()
	if err := l.runSteps(startSteps, 0, nil); err != nil {
		return 1, err
	}
	child := l.child
	waitErr := l.relayUntilExit(child, sigs)
	child.exited = time.Now()
	if why := l.nextBootReason(); why != "" {
		// Until the next PID 1 answers on them, ddinit run does (from
		// PID 1's "control-closed" on, or from its exit): no client of the
		// control API is refused or left waiting.
		l.standIn(why)
	}
	l.undoAll()
	// Every goroutine a step started has ended with its undo: what is
	// left is what there was before PID 1 (a leak shows here).
	l.log.WithFields(logrus.Fields{"goroutines": runtime.NumGoroutine(), "before": before}).Debug("every launch step undone")
	return l.exitStatus(child, waitErr)
}

// child is PID 1 as ddinit run holds it: the process and the streams
// it reports on.
type child struct {
	cmd             *exec.Cmd
	started, exited time.Time
	relayed, events chan struct{} // closed when its log and events end
}

// startPID1 re-executes ddinit as PID 1 of new mount, pid, net, ipc and
// uts namespaces, handing it its config (fd 3), the events pipe (fd 4),
// the drives socket (fd 5) and the control API's sockets (fd 6…), which
// it serves from its first moment, before the root even exists.
func (l *launcher) startPID1() (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find ddinit's own binary: %w", err)
	}
	var pipes [3][2]*os.File // config, events, log: read and write ends
	for i := range pipes {
		if pipes[i][0], pipes[i][1], err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("pipes to PID 1: %w", err)
		}
	}
	cfgR, cfgW, evR, evW, logR, logW := pipes[0][0], pipes[0][1], pipes[1][0], pipes[1][1], pipes[2][0], pipes[2][1]
	controlFiles := l.controlFiles
	drivesHere, drivesThere, err := socketPair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, pid1Argument)
	cmd.Args[0] = "ddinit"
	cmd.ExtraFiles = append([]*os.File{cfgR, evW, drivesThere}, controlFiles...)
	cmd.Stderr = logW
	cmd.Env = []string{"PATH=" + services.DefaultPath, "HOME=/root"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		// If ddinit run dies, PID 1 dies, and the kernel ends the namespace.
		Pdeathsig: unix.SIGKILL,
	}
	c := &child{cmd: cmd, started: time.Now(), relayed: make(chan struct{}), events: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start PID 1 in new namespaces: %w", err)
	}
	// PID 1 holds its ends now. The control sockets stay open here too:
	// a PID 1 that replaces this one gets them.
	for _, f := range []*os.File{cfgR, evW, logW, drivesThere} {
		f.Close()
	}
	drives, err := unixConn(drivesHere)
	if err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("drives socket: %w", err)
	}
	l.mu.Lock()
	l.drives, l.engineUp = drives, false
	l.generation++
	l.mu.Unlock()
	pid := cmd.Process.Pid
	l.cfg.HostPID = pid
	first := "ddinit run started"
	if l.cfg.Switching != "" {
		first = "the PID 1 replaced exited"
	}
	l.cfg.Marks = []timeline.Mark{{Event: first, At: l.begun}, {Event: "starting PID 1 (new namespaces)", At: c.started}}
	l.answered.Store(false)
	if err := json.NewEncoder(cfgW).Encode(l.cfg); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("hand PID 1 its config: %w", err)
	}
	cfgW.Close()
	l.log.WithField("pid", pid).Info("PID 1 started in new namespaces")
	go func() {
		logs.Relay(logR, l.log)
		close(c.relayed)
	}()
	go func() {
		l.readEvents(evR, pid, cmd.Process)
		close(c.events)
	}()
	return c, nil
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
			l.stopAsked = true // no next boot, whatever was under way
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
			<-c.events
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

// readEvents handles what PID 1 reports: its sockets (which are then
// exposed) and a boot failure.
func (l *launcher) readEvents(r io.Reader, pid int, proc *os.Process) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		var ev event
		if json.Unmarshal(s.Bytes(), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "failed":
			l.mu.Lock()
			l.bootError = ev.Error
			if l.cfg.PackTrial {
				l.packFailure = ev.Error
			}
			l.mu.Unlock()
		case "pack-ready":
			l.packProved()
		case "engine-ready":
			l.engineReady()
		case "shutdown":
			l.mu.Lock()
			l.stopAsked = true // no next PID 1, whatever was under way
			l.mu.Unlock()
		case "control-closed":
			l.pid1Gone() // its pack requests are no longer answered
			if why := l.nextBootReason(); why != "" {
				l.standIn(why)
			}
		case "pack-failed":
			l.mu.Lock()
			l.packFailure = ev.Error
			l.mu.Unlock()
		case "sockets":
			// PID 1's root is in place: its iptables can set up NAT, its
			// /dev and drives can follow the distro's, its sockets be
			// exposed.
			if err := l.runSteps(socketSteps, pid, ev.Sockets); err != nil {
				l.mu.Lock()
				l.bootError = err.Error()
				l.mu.Unlock()
				proc.Signal(unix.SIGTERM)
			}
		}
	}
}

// follow starts keeping PID 1's drives and devices in step with the
// distro's, and returns how to stop (and wait for) that.
func (l *launcher) follow(pid int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.sendDrives(ctx, l.drives) }()
	go func() { defer wg.Done(); l.mirrorDevices(ctx, pid) }()
	return func() { cancel(); wg.Wait() }
}

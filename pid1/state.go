package pid1

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/steps"
	"github.com/ddinit/ddinit/timeline"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// pid1 is PID 1's state.
type pid1 struct {
	cfg     config.Config
	handoff wire.Handoff
	log     *logrus.Entry
	reaper  *Reaper
	link    *wire.Conn // the socket to ddinit run (nil if it could not be taken)
	linkMu  sync.Mutex // one message at a time on it

	started time.Time
	ownLog  *logs.Ring
	stop    chan string // why to stop: a signal or the control API
	server  *control.Server
	// bg are the goroutines PID 1 starts (following ddinit run, the
	// judges of dockerd's first start, the engine's requests): stopped
	// and awaited before it exits.
	bg steps.Group
	// boot runs the boot's steps; its undo is the shutdown.
	boot steps.Runner

	mu         sync.Mutex
	state      string
	reason     string
	phases     []control.Phase
	ds         *mounts.DataStore
	root       *rootfs.Root
	components []control.Component
	drives     []control.Drive
	dns        *control.DNSState // as ddinit run last reported it
	reach      *control.Reach    // as ddinit run last reported it
	defs       []services.Definition
	// dockerSocket is dockerd's socket inside, for the idle check.
	dockerSocket string
	// engine is the engine on demand's state machine; engineOps lets one
	// stop, pause or wake run at a time; giving, the give-back after one.
	engine     *enginestate.Machine
	engineOps  sync.Mutex
	giving     giveBack
	cgroups    *cgroup.Hierarchy
	packCalls  wire.Calls[wire.PackAnswer] // PUT /version-pack requests ddinit run answers
	dockerdEnv []string                    // the proxy, for dockerd's next start
	// packBundle is the version pack's CA bundle, before trusted CAs.
	packBundle     []byte
	packBundleRead bool
	// replaced is why this PID 1 is being replaced by ddinit run (a live
	// version-pack switch): from then on it is not healthy, and says why.
	// engineWasUp: dockerd has been ready this boot (a PID 1 that replaced
	// another says why only until then).
	replaced    string
	engineWasUp bool
	// trust runs trustDistro once in this PID 1's namespace (trustOnce).
	trust sync.Once

	mounted  []mounts.Mount // what the mounts step made, for the shutdown
	switched bool           // the root is the assembled one

	sup *services.Supervisor
	// kube is the Kubernetes cluster (pid1/kube.go).
	kube kubeState

	// The boot's timeline, and the last wake's; engineMarks is the one
	// the supervisor's marks go to now (read without in.mu: the
	// supervisor marks from its own goroutines).
	bootMarks   *timeline.Recorder
	wakeMarks   atomic.Pointer[timeline.Recorder]
	engineMarks atomic.Pointer[timeline.Recorder]

	// settings owns the settings document and daemon.json, with its own
	// lock; it answers GET /settings from the first moment.
	settings *settings.Applier
}

// tell sends ddinit run a message; it reports whether it went (it does
// not when ddinit run is gone: PID 1 dies with it then).
func (in *pid1) tell(m wire.Message) bool {
	if in.link == nil {
		return false
	}
	in.linkMu.Lock()
	defer in.linkMu.Unlock()
	if err := in.link.Send(m); err != nil {
		in.log.WithError(err).WithField("kind", m.Kind).Warn("a message to ddinit run was not sent")
		return false
	}
	return true
}

// setState is what /status and /ping say PID 1 is doing.
func (in *pid1) setState(state, reason string) {
	in.mu.Lock()
	in.state, in.reason = state, reason
	in.mu.Unlock()
}

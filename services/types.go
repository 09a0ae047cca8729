package services

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/timeline"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Config says how to run containerd and where things live.
type Config struct {
	Namespace        string // containerd namespace of the services
	ContainerdBinary string
	// ContainerdConfigVersion is the config format the binary reads as
	// its own (ContainerdConfigVersion).
	ContainerdConfigVersion int
	RunDir                  string // containerd.toml and task FIFOs go here
	ContainerdRoot          string
	ContainerdState         string
	Address                 string // containerd's socket
	LogDir                  string
	// Restart is the restart policy of containerd and of every service.
	Restart RestartPolicy
	// Liveness is the timing of containerd's liveness check and the
	// default of the services' probes.
	Liveness LivenessTiming
	// RuntimeBinary is the OCI runtime the runc v2 shim runs every
	// service with ("/usr/bin/crun"); "" is the shim's own default, runc.
	// Users' containers are dockerd's: this does not touch them.
	RuntimeBinary string
	// HostRoot is where ddinit's own root is bound for services whose spec
	// says root.path "/": runc cannot use the current root as a new root.
	HostRoot string
	// Settings switch optional services on ("kubernetes": true).
	Settings map[string]bool
	// CRI, when set, turns containerd's CRI plugin on, configured so
	// (Kubernetes is on).
	CRI *CRI
	// ClearNamespaces are containerd namespaces whose containers are
	// removed, their tasks killed, when containerd has started: what a
	// cluster switched off (or a crash) left ("k8s.io").
	ClearNamespaces []string
	// Env, when set, is environment a service's process gets besides its
	// definition's, looked up at each start (dockerd's proxy).
	Env func(service string) []string
	// Cgroups, when set, is the hierarchy containerd is placed in, in
	// CgroupParent/containerd; the services' cgroups are under
	// CgroupParent too (the engine's parent).
	Cgroups      *cgroup.Hierarchy
	CgroupParent string
	// Mark, when set, is told each step of a start as it happens
	// (containerd started and answering; a service's container ready (kept or created),
	// its task created and started, the Milestones its log shows, and
	// ready), for the boot's timeline.
	Mark func(event string, at time.Time)
	// Milestones are lines of a service's log that mark a step of its own
	// start (dockerd's "API listen on"), by service name.
	Milestones map[string][]timeline.Milestone
	Spawner    Spawner
	Log        *logrus.Entry
}

// Supervisor runs containerd and the services.
type Supervisor struct {
	cfg   Config
	order []*service
	ctx   context.Context // carries the containerd namespace; never cancelled

	ctrd *service // containerd's status, logs and stop channel
	// startTask starts a service's run on containerd: the containerd task
	// (startContainerdTask), or a fake in tests.
	startTask func(d *daemon, svc *service) (task, error)
	// readCPUTimes reads a process's CPU times for liveness
	// (readCPUTimes), or a fake in tests.
	readCPUTimes func(pid int) (cpuTimes, error)

	mu       sync.Mutex
	cur      *daemon       // the running containerd, nil while it is down
	changed  chan struct{} // closed and replaced on every state change
	stopping bool
	stopAll  chan struct{}
	resting  atomic.Bool   // the engine is paused on purpose: liveness rests
	monitor  chan struct{} // closed when containerd's supervision returns
}

// service is one supervised program: its definition, output and state.
type service struct {
	def     Definition
	sink    *logs.Sink
	file    *logs.RotatingFile
	stop    chan struct{}
	done    chan struct{}
	restart chan struct{} // a restart asked for (control API)

	mu        sync.Mutex
	st        Status
	killCause string // why the supervisor killed the current run, if it did
}

// daemon is one run of the containerd daemon.
type daemon struct {
	pid     int
	client  *containerd.Client
	started time.Time
	wait    <-chan unix.WaitStatus // its exit status, once
	down    chan struct{}          // closed when this run is over
	exited  chan struct{}          // closed once its process is reaped
}

// Definition is one service to supervise.
type Definition struct {
	Name        string
	Path        string // the config.json it came from
	Spec        *specs.Spec
	Ready       *Probe
	Live        *Probe
	LiveTiming  LivenessTiming // unset fields: the supervisor's defaults
	DependsOn   []string
	Required    bool
	Setting     string
	StopTimeout time.Duration
	Socket      string
}

// ExitInfo is how a run ended.
type ExitInfo struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"` // the start itself failed
	Cause  string    `json:"cause,omitempty"` // why ddinit killed it
	Time   time.Time `json:"time"`
	Ran    string    `json:"ran"`
	Output []string  `json:"output,omitempty"` // its last lines
}

// Status is the state of containerd or of a service, as the control API
// shows it.
type Status struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Ready     bool      `json:"ready"`
	Required  bool      `json:"required"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
	NextStart time.Time `json:"nextStart,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	LastExit  *ExitInfo `json:"lastExit,omitempty"`
	// Runtime is the OCI runtime its tasks run under (runc, crun).
	Runtime string `json:"runtime,omitempty"`
}

// task is one started run of a service: a containerd task (running), or
// a fake in the supervisor's tests.
type task interface {
	PID() int
	// Exited delivers the exit status once; one with Error() set means the
	// wait broke (containerd went away), not the task.
	Exited() <-chan containerd.ExitStatus
	Signal(sig syscall.Signal) error
	// Finish deletes the exited task and closes its output; Abandon only
	// closes the output (containerd is gone and the task with it).
	Finish()
	Abandon()
}

// Probe checks that a service answers.
type Probe struct {
	Socket string // unix socket path inside the namespace
	Addr   string // or host:port, for a service that answers on TCP
	Path   string // HTTP path; empty means a connect is enough
	TLS    bool   // HTTPS (Addr only)
}

package control

import (
	"fmt"
	"io"
	"time"

	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/timeline"
)

// The states /status and /ping report (Status.State).
const (
	StateBooting  = "booting"
	StateRunning  = "running"
	StateStopping = "stopping"
	StateFailed   = "failed"
	// StateIdle: the engine is stopped or paused on purpose (nobody used
	// it); the next client wakes it.
	StateIdle = "idle"
	// StateRestarting: between two PID 1s (a live version-pack switch, a
	// rollback).
	StateRestarting = "restarting"
)

// Status is GET /status.
type Status struct {
	Version string    `json:"version"`
	State   string    `json:"state"` // booting, running, stopping, failed
	Ready   bool      `json:"ready"`
	Reason  string    `json:"reason,omitempty"`
	Started time.Time `json:"started"`
	Uptime  string    `json:"uptime"`
	HostPID int       `json:"hostPid,omitempty"` // PID 1 as the distro sees it
	Phases  []Phase   `json:"bootPhases"`
	// Timeline is the boot as its events were seen, from ddinit run's
	// start to the first answer through an exposed socket; WakeTimeline,
	// the engine's last wake after an idle stop.
	Timeline     []timeline.Step `json:"bootTimeline,omitempty"`
	WakeTimeline []timeline.Step `json:"wakeTimeline,omitempty"`
	Services     []ServiceStatus `json:"services"`
	Kubernetes   *Kubernetes     `json:"kubernetes,omitempty"`
	Containerd   ServiceStatus   `json:"containerd"`
	Images       []Image         `json:"images"`
	Components   []Component     `json:"components"`
	DataStore    DataStore       `json:"dataStore"`
	Drives       []Drive         `json:"drives"`
	// DistroBinds are the only places where the namespace reaches the
	// distro's file systems.
	DistroBinds []Bind        `json:"distroBinds"`
	Mounts      []string      `json:"mounts"`
	Network     *NetworkState `json:"network,omitempty"`
	DNS         *DNSState     `json:"dns,omitempty"`
	// Reach is what of the namespace ddinit run makes reachable from the
	// distro beyond published ports: host-network containers' listeners
	// and the engine's container networks.
	Reach *Reach     `json:"reach,omitempty"`
	Packs *PackState `json:"packs,omitempty"`
	// SettingsGeneration is the settings document in force; Applying, a
	// change being applied.
	SettingsGeneration int64  `json:"settingsGeneration"`
	Applying           string `json:"applyingSettings,omitempty"`
	SettingsError      string `json:"settingsError,omitempty"` // the last change rolled back
	// Recovered lists the files this boot could not use, where they were
	// kept and what is in force instead.
	Recovered  []Recovery `json:"recovered,omitempty"`
	Goroutines int        `json:"goroutines"`
	Orphans    int64      `json:"orphansReaped"`
}

// Health is /ping: the state, whether ready and why not, and notes that
// do not make ddinit unhealthy but a person should read (a file the boot
// could not use and kept aside).
type Health struct {
	State  string
	Ready  bool
	Reason string
	Notes  []string
}

// NetworkState is the namespace's end of its link to the distro.
type NetworkState struct {
	Link      string   `json:"link"`
	Addresses []string `json:"addresses"`
	Gateways  []string `json:"gateways,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// DNSState is the DNS forwarder containers ask: where it listens, the
// distro's nameservers it forwards to now, and what it did.
type DNSState struct {
	Listen      []string    `json:"listen,omitempty"`
	Servers     []string    `json:"servers"`
	Answered    uint64      `json:"answered"`
	Failed      uint64      `json:"failed"`
	LastFailure *DNSFailure `json:"lastFailure,omitempty"`
	// Error says why names are not forwarded (no forwarder, or no
	// nameserver in the distro's resolver file).
	Error string `json:"error,omitempty"`
}

// Reach is what ddinit run makes reachable from the distro beyond the
// ports containers publish (as it last reported it).
type Reach struct {
	// HostPorts: the hostNetworkPorts setting is on.
	HostPorts bool `json:"hostPorts"`
	// Listeners are the sockets host-network containers listen on, each
	// forwarded from the distro's loopback or why not.
	Listeners []HostListener `json:"listeners"`
	// Routes are the engine's container networks, each routed from the
	// distro through the link or why not.
	Routes []ContainerRoute `json:"routes"`
	// Error says why none of it runs (no link, no engine API).
	Error string `json:"error,omitempty"`
}

// HostListener is one socket a host-network container listens on in the
// engine's namespace, and what the distro sees of it.
type HostListener struct {
	Container string `json:"container"` // short id
	Name      string `json:"name,omitempty"`
	Proto     string `json:"proto"`  // tcp, udp
	Listen    string `json:"listen"` // host:port in the engine's namespace
	// Distro is where it is served in the distro ("127.0.0.1:8080"); empty
	// when it is not (Reason says why).
	Distro string `json:"distro,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ContainerRoute is one subnet of a container network and whether the
// distro routes it through the link.
type ContainerRoute struct {
	Network string `json:"network"`
	Subnet  string `json:"subnet"`
	Via     string `json:"via,omitempty"` // the namespace's link address, when routed
	Routed  bool   `json:"routed"`
	Reason  string `json:"reason,omitempty"` // why not routed
}

// DNSFailure is the last query no nameserver answered.
type DNSFailure struct {
	Name   string    `json:"name"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Phase is a boot step and its duration.
type Phase struct {
	Name       string  `json:"name"`
	DurationMs float64 `json:"durationMs"`
}

// ServiceStatus is containerd's or a service's state: its state
// (starting, running, restarting, failed, stopped, off), whether it is
// ready and required, its pid in the namespace, its restarts, since when,
// when it starts next, why, and how its last run ended.
type ServiceStatus struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Ready     bool      `json:"ready"`
	Required  bool      `json:"required"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	Since     time.Time `json:"since"`
	NextStart time.Time `json:"nextStart,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	LastExit  *Exit     `json:"lastExit,omitempty"`
	// Runtime is the OCI runtime a service's tasks run under (runc,
	// crun); none for containerd.
	Runtime string `json:"runtime,omitempty"`
}

// Exit is how a run of containerd or a service ended: its code or signal,
// a start that failed, why ddinit killed it, when, how long it ran, and
// its last lines.
type Exit struct {
	Code   int       `json:"code"`
	Signal string    `json:"signal,omitempty"`
	Error  string    `json:"error,omitempty"`
	Cause  string    `json:"cause,omitempty"`
	Time   time.Time `json:"time"`
	Ran    string    `json:"ran"`
	Output []string  `json:"output,omitempty"`
}

// Recovery is a file the boot could not use: why, where it was kept, and
// what is in force instead.
type Recovery struct {
	File   string `json:"file"`
	Reason string `json:"reason"`
	KeptAs string `json:"keptAs,omitempty"`
	Using  string `json:"using"`
}

func (r Recovery) String() string {
	s := fmt.Sprintf("%s could not be used (%s)", r.File, r.Reason)
	if r.KeptAs != "" {
		s += "; kept aside as " + r.KeptAs
	}
	return s + "; in force: " + r.Using
}

// Image is one boot image.
type Image struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Digest   string `json:"digest"`
	CacheHit bool   `json:"cacheHit"`
	Kernel   bool   `json:"kernelMount"`
}

// Component is a line of the version pack's manifest.
type Component struct {
	Name    string `json:"name"`
	Package string `json:"package,omitempty"`
	Version string `json:"version"`
}

// DataStore is the data distro's root.
type DataStore struct {
	Dir       string `json:"dir"`
	FreeBytes uint64 `json:"freeBytes"`
	LowSpace  bool   `json:"lowSpace"`
}

// Drive is a Windows drive as the namespace sees it.
type Drive struct {
	Letter string `json:"letter"`
	Path   string `json:"path"`   // in the distro
	Inside string `json:"inside"` // in the namespace
	FSType string `json:"fsType"`
}

// Bind is a folder of the distro bound into the namespace.
type Bind struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Slave    bool   `json:"slave,omitempty"`
}

// LogLine is one line of GET /logs?format=json.
type LogLine struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service"`
	Stream  string    `json:"stream"`
	Text    string    `json:"text"`
}

// Backend is what the control API serves; PID 1 implements it.
type Backend interface {
	Status() Status
	// Health is what /ping needs of Status, cheap enough to poll.
	Health() Health
	// Logs returns the last tail lines (all kept when tail <= 0) and, when
	// follow, a channel of new ones and a function to stop following.
	// Every error carries its kind (github.com/containerd/errdefs, and
	// settings.ErrRolledBack): StatusCode maps it to the answer.
	Logs(service string, tail int, follow bool) ([]LogLine, <-chan LogLine, func(), error)
	Restart(service string) error
	// Shutdown asks for a clean stop and returns at once.
	Shutdown()
	Diagnostics(w io.Writer) error
	// Settings is the settings document in force.
	Settings() Settings
	// PutSettings validates, applies and stores a document (a PUT body).
	PutSettings(body []byte) (Settings, error)
	// UsePack chooses the version pack the next boot uses (or rolls back
	// to the previous one), verified first.
	UsePack(req UsePack) (PackState, error)
	// ResetKubernetes wipes the cluster's state and, when Kubernetes is
	// on, starts a new empty cluster; it returns once the new one's
	// services are started.
	ResetKubernetes() error
	// Kubeconfig is the cluster's admin kubeconfig (context docker-desktop,
	// server https://127.0.0.1:6443: the frontend points it where it
	// exposes the API server), or why there is none.
	Kubeconfig() ([]byte, error)
}

// Kubernetes is the cluster as /status shows it: its state ("off",
// "starting", "running", "failed") and why, its version, whether the node
// is Ready. Its components are among the services.
type Kubernetes struct {
	On        bool   `json:"on"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	Version   string `json:"version,omitempty"`
	NodeReady bool   `json:"nodeReady"`
}

// UsePack is PUT /version-pack: a pack image (path, and its sha256 when
// it has no .sha256 beside it), or a rollback to the previous pack.
type UsePack struct {
	Path   string `json:"path,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Force switches (or rolls back) to a pack whose dockerd is older than
	// one that ran on the data store, or whose version, or the store's,
	// cannot be read.
	Force    bool `json:"force,omitempty"`
	Rollback bool `json:"rollback,omitempty"`
	// Live switches now, without a reboot: the engine is replaced while
	// every client is held (see the README). The answer comes once the
	// switch has begun; /ping tells when it is done.
	Live bool `json:"live,omitempty"`
}

// PackState is which version pack runs, which one the next boot uses and
// which one it rolls back to.
type PackState struct {
	Running  *PackRef `json:"running,omitempty"`
	Next     *PackRef `json:"next,omitempty"`
	Previous *PackRef `json:"previous,omitempty"`
	// Trial: Next has yet to bring the engine up; a boot on it that does
	// not is rolled back.
	Trial       bool   `json:"trial,omitempty"`
	LastFailure string `json:"lastFailure,omitempty"`
	// Warning says what a choice forced past the version check may cost.
	Warning string `json:"warning,omitempty"`
}

// PackRef names a version pack.
type PackRef struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
	Engine string `json:"engine,omitempty"`
}

// Settings is GET /settings and the answer to PUT /settings: the document
// in force (the settings package's: what PUT takes), its generation, a
// change being applied, how the last change that failed failed, and the
// files the boot could not use.
type Settings struct {
	Generation int64             `json:"generation"`
	Settings   settings.Document `json:"settings"`
	Applying   string            `json:"applying,omitempty"`
	LastError  string            `json:"lastError,omitempty"`
	Recovered  []Recovery        `json:"recovered,omitempty"`
}

package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/timeline"
	"golang.org/x/sys/unix"
)

// PID1Argument is the argument `ddinit run` starts PID 1 with (`ddinit
// init`).
const PID1Argument = "init"

// PID 1's file descriptors: the handoff, the socket to ddinit run, and
// the control API's listening sockets from FirstControlFD on (in the
// order of the config's Control).
const (
	HandoffFD      = 3
	SocketFD       = 4
	FirstControlFD = 5
)

// Handoff is what ddinit run gives each PID 1 it starts: the config of
// this boot (the user's, with the version pack chosen for it) and what
// ddinit run decided for it.
type Handoff struct {
	Config config.Config `json:"config"`
	// HostPID is PID 1 as the distro sees it.
	HostPID int `json:"hostPid"`
	// Marks are ddinit run's events of this boot (its start, PID 1's),
	// for the boot's timeline.
	Marks []timeline.Mark `json:"marks,omitempty"`
	// Switching is why this PID 1 replaces another in the same run (a
	// live version-pack switch, a rollback): /ping says so until the
	// engine is ready.
	Switching string `json:"switching,omitempty"`
	// PackTrial: the version pack was just chosen and has yet to bring the
	// engine up (within the settings deadline, or it is rolled back).
	PackTrial bool `json:"packTrial,omitempty"`
	// PackKeep are the image cache entries to keep though unused: the
	// pack to roll back to.
	PackKeep []string `json:"packKeep,omitempty"`
	// Recovered are the data store's folders ddinit run set aside (they
	// were not folders), for PID 1 to report.
	Recovered []settings.Recovery `json:"recovered,omitempty"`
}

// Kind is what a Message is.
type Kind string

// PID 1 tells ddinit run:
const (
	// Sockets: PID 1's root is in place and its services' sockets are
	// these (name → path inside). Sockets.
	Sockets Kind = "sockets"
	// BootFailed: the boot failed, and why. Err.
	BootFailed Kind = "boot-failed"
	// EngineReady: dockerd is ready for the first time this boot.
	EngineReady Kind = "engine-ready"
	// PackProved: the version pack on trial brought the engine up.
	PackProved Kind = "pack-proved"
	// PackFailed: the version pack on trial did not, and why. Err.
	PackFailed Kind = "pack-failed"
	// ShutdownAsked: a shutdown was asked of PID 1: no next one.
	ShutdownAsked Kind = "shutdown-asked"
	// ControlClosed: PID 1 closed the control sockets (its exit can take
	// a while yet): ddinit run answers them meanwhile if another follows.
	ControlClosed Kind = "control-closed"
	// EngineState: the engine made a transition. Engine.
	EngineState Kind = "engine-state"
	// IdleTimes: how long the engine may go unused before it is paused,
	// and before it is stopped. Idle.
	IdleTimes Kind = "idle-times"
	// Proxy: the proxy plan in force. Proxy.
	Proxy Kind = "proxy"
	// EngineReply answers an EngineRequest. Reply.
	EngineReply Kind = "engine-reply"
	// PackRequest passes on a PUT /version-pack. Pack.
	PackRequest Kind = "pack-request"
	// KubernetesState: the cluster was switched on or off, or its API
	// server became ready or stopped being so. Kube.
	KubernetesState Kind = "kubernetes-state"
	// ReachPlan: what of the namespace ddinit run makes reachable from the
	// distro beyond published ports, as the settings say. Reach.
	ReachPlan Kind = "reach-plan"
)

// ddinit run tells PID 1:
const (
	// DrivesNow: the distro's drives now, and a cloned mount tree (sent
	// alongside) for each of Attach. Drives.
	DrivesNow Kind = "drives"
	// DNSState: how the DNS forwarder fares, for /status. DNS.
	DNSState Kind = "dns-state"
	// ReachState: the host-network listeners forwarded and the container
	// networks routed, for /status. ReachNow.
	ReachState Kind = "reach-state"
	// EngineRequest asks PID 1 to stop or pause the engine if idle, or to
	// wake it. Request.
	EngineRequest Kind = "engine-request"
	// PackReply answers a PackRequest. PackAnswer.
	PackReply Kind = "pack-reply"
	// Marks: ddinit run's events for the boot's timeline. Marks.
	Marks Kind = "marks"
	// Replace: PID 1 is being replaced (a live switch): shut down. Reason.
	Replace Kind = "replace"
)

// Message is one message on the socket: its Kind, and the payload that
// kind carries (the others empty).
type Message struct {
	Kind       Kind              `json:"kind"`
	Err        *Error            `json:"error,omitempty"`
	Sockets    map[string]string `json:"sockets,omitempty"`
	Engine     *Engine           `json:"engine,omitempty"`
	Idle       *Idle             `json:"idle,omitempty"`
	Proxy      *ProxyPlan        `json:"proxy,omitempty"`
	Reply      *Reply            `json:"reply,omitempty"`
	Pack       *PackAsk          `json:"pack,omitempty"`
	Drives     *Drives           `json:"drives,omitempty"`
	DNS        *control.DNSState `json:"dns,omitempty"`
	Request    *Request          `json:"request,omitempty"`
	PackAnswer *PackAnswer       `json:"packAnswer,omitempty"`
	Marks      []timeline.Mark   `json:"marks,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Kube       *Kube             `json:"kube,omitempty"`
	Reach      *Reach            `json:"reach,omitempty"`
	ReachNow   *control.Reach    `json:"reachNow,omitempty"`
}

// check refuses a message whose kind is unknown or whose payload is
// missing.
func (m Message) check() error {
	missing := false
	switch m.Kind {
	case EngineReady, PackProved, ShutdownAsked, ControlClosed:
	case BootFailed, PackFailed:
		missing = m.Err == nil
	case Sockets:
		missing = m.Sockets == nil
	case EngineState:
		missing = m.Engine == nil || !m.Engine.State.Known()
	case IdleTimes:
		missing = m.Idle == nil
	case Proxy:
		missing = m.Proxy == nil
	case EngineReply:
		missing = m.Reply == nil
	case PackRequest:
		missing = m.Pack == nil
	case DrivesNow:
		missing = m.Drives == nil
	case DNSState:
		missing = m.DNS == nil
	case EngineRequest:
		missing = m.Request == nil
	case PackReply:
		missing = m.PackAnswer == nil
	case Marks:
		missing = m.Marks == nil
	case Replace:
		missing = m.Reason == ""
	case KubernetesState:
		missing = m.Kube == nil
	case ReachPlan:
		missing = m.Reach == nil
	case ReachState:
		missing = m.ReachNow == nil
	default:
		return fmt.Errorf("a message of no known kind %q", m.Kind)
	}
	if missing {
		return fmt.Errorf("a %s message without its payload", m.Kind)
	}
	return nil
}

// Kube is where the Kubernetes cluster is, for ddinit run: what it
// publishes in the distro (the API server on 127.0.0.1:6443, the
// LoadBalancer Services' ports) and offers to the distros (the admin
// kubeconfig).
type Kube struct {
	// On: the setting is on (the cluster runs or is starting).
	On bool `json:"on"`
	// Ready: the API server answers its readiness check.
	Ready bool `json:"ready"`
	// APIServer is the API server's address in PID 1's network namespace,
	// reachable from the distro's across the link ("100.64.249.2:6443").
	APIServer string `json:"apiServer,omitempty"`
	// Kubeconfig is the admin kubeconfig, a path relative to the data
	// store (its server is https://127.0.0.1:6443, as the distros reach
	// it); ddinit run reads it from the data store.
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// Reach is what the settings say ddinit run makes reachable from the
// distro beyond published ports.
type Reach struct {
	// HostPorts: forward what host-network containers listen on to the
	// distro's loopback (the hostNetworkPorts setting).
	HostPorts bool `json:"hostPorts"`
}

// Engine is a transition of the engine's state machine.
type Engine struct {
	State  enginestate.State `json:"state"`
	Since  time.Time         `json:"since"`
	Reason string            `json:"reason,omitempty"`
}

// Idle is how long the engine may go unused before it is paused, and
// before it is stopped (0: never).
type Idle struct {
	Pause time.Duration `json:"pause"`
	Stop  time.Duration `json:"stop"`
}

// ProxyPlan is how the settings' proxy reaches the namespace: the
// variables dockerd, containers and builds get (upper-case names), and
// the relays ddinit run serves for a proxy on the distro's loopback.
type ProxyPlan struct {
	Env    map[string]string `json:"env,omitempty"`
	Relays []Relay           `json:"relays,omitempty"`
}

// Relay is a proxy on the distro's loopback (Dial) as the namespace
// reaches it (Listen, on the link's address in the namespace).
type Relay struct {
	Listen string `json:"listen"`
	Dial   string `json:"dial"`
}

// Op is what an EngineRequest asks.
type Op string

// The engine requests.
const (
	PauseIfIdle Op = "pause-if-idle"
	StopIfIdle  Op = "stop-if-idle"
	Wake        Op = "wake"
)

// Request is ddinit run asking PID 1 something of the engine.
type Request struct {
	ID int64 `json:"id"`
	Op Op    `json:"op"`
}

// Reply answers a Request: Busy says why the engine is not idle after
// all (a container runs).
type Reply struct {
	ID   int64  `json:"id"`
	Busy string `json:"busy,omitempty"`
	Err  *Error `json:"error,omitempty"`
}

// PackAsk is PID 1 passing on a PUT /version-pack.
type PackAsk struct {
	ID  int64           `json:"id"`
	Use control.UsePack `json:"use"`
	// Running is the dockerd version of the pack this boot runs ("" when
	// its manifest names none), RunningDigest its digest ("" while no pack
	// runs): it writes the data store now, before its record is written
	// (when dockerd is ready), so no switch may go below it either.
	Running       string `json:"running,omitempty"`
	RunningDigest string `json:"runningDigest,omitempty"`
}

// PackAnswer answers a PackAsk.
type PackAnswer struct {
	ID    int64             `json:"id"`
	Err   *Error            `json:"error,omitempty"`
	Packs control.PackState `json:"packs"`
}

// Drives is the distro's drives now, and those whose mount trees come
// with the message, in order.
type Drives struct {
	Now    []mounts.Drive `json:"now"`
	Attach []string       `json:"attach,omitempty"`
}

// Error is an error as it crosses: its kind (containerd's errdefs, and
// the settings' rolled-back) and its text.
type Error struct {
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
}

// kinds are the error kinds that cross, by name: errdefs' (asked with
// its Is functions, which also know errors that say their kind by method)
// and the settings' rolled-back.
var kinds = []struct {
	name string
	is   func(error) bool
	err  error
}{
	{"invalid-argument", errdefs.IsInvalidArgument, errdefs.ErrInvalidArgument},
	{"not-found", errdefs.IsNotFound, errdefs.ErrNotFound},
	{"already-exists", errdefs.IsAlreadyExists, errdefs.ErrAlreadyExists},
	{"permission-denied", errdefs.IsPermissionDenied, errdefs.ErrPermissionDenied},
	{"failed-precondition", errdefs.IsFailedPrecondition, errdefs.ErrFailedPrecondition},
	{"conflict", errdefs.IsConflict, errdefs.ErrConflict},
	{"not-implemented", errdefs.IsNotImplemented, errdefs.ErrNotImplemented},
	{"unavailable", errdefs.IsUnavailable, errdefs.ErrUnavailable},
	{"rolled-back", settings.IsRolledBack, settings.ErrRolledBack},
}

// EncodeError is err as it crosses (nil for nil).
func EncodeError(err error) *Error {
	if err == nil {
		return nil
	}
	e := &Error{Message: err.Error()}
	for _, k := range kinds {
		if k.is(err) {
			e.Kind = k.name
			break
		}
	}
	return e
}

// Err is the error as it came: of its kind, with its text (nil for nil).
func (e *Error) Err() error {
	if e == nil {
		return nil
	}
	for _, k := range kinds {
		if k.name == e.Kind {
			return kindError{msg: e.Message, kind: k.err}
		}
	}
	return errors.New(e.Message)
}

type kindError struct {
	msg  string
	kind error
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }

// Pair makes the socket between the two processes: ddinit run's end and
// PID 1's.
func Pair() (here, there *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("the socket to PID 1: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "wire"), os.NewFile(uintptr(fds[1]), "wire"), nil
}

// Conn is one end of the socket.
type Conn struct {
	c  *net.UnixConn
	rb []byte
	ob []byte
}

// NewConn takes over f, one end of the socket.
func NewConn(f *os.File) (*Conn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("the socket between ddinit's processes: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("the socket between ddinit's processes is a %T", c)
	}
	return &Conn{c: uc, rb: make([]byte, maxMessage), ob: make([]byte, unix.CmsgSpace(maxFiles*4))}, nil
}

// maxMessage bounds a message (the largest is a DNS state or a pack
// answer: a few KB); maxFiles, the descriptors one carries (a drive
// each: 26 letters).
const (
	maxMessage = 256 << 10
	maxFiles   = 26
)

// Send sends m, with files alongside (their descriptors are copied: the
// caller still closes them). Messages keep their bounds and their order.
func (c *Conn) Send(m Message, files ...*os.File) error {
	if err := m.check(); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode a %s message: %w", m.Kind, err)
	}
	if len(b) > maxMessage {
		return fmt.Errorf("a %s message of %d bytes: over %d", m.Kind, len(b), maxMessage)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send a %s message: %w", m.Kind, err)
	}
	return nil
}

// Receive waits for the next message and the files that came with it
// (the caller closes them). A message that does not decode, or is not
// whole, is an error naming it; the next Receive reads the next one. At
// the other end's close it returns io.EOF.
func (c *Conn) Receive() (Message, []*os.File, error) {
	n, oobn, _, _, err := c.c.ReadMsgUnix(c.rb, c.ob)
	if err != nil {
		return Message{}, nil, err // io.EOF at the other end's close
	}
	var files []*os.File
	if oobn > 0 {
		if msgs, err := unix.ParseSocketControlMessage(c.ob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, fd := range fds {
						files = append(files, os.NewFile(uintptr(fd), "passed"))
					}
				}
			}
		}
	}
	if n == 0 {
		closeAll(files)
		return Message{}, nil, io.EOF
	}
	var m Message
	if err := json.Unmarshal(c.rb[:n], &m); err != nil {
		closeAll(files)
		return Message{}, nil, &GarbledError{fmt.Errorf("a message that does not decode: %w", err)}
	}
	if err := m.check(); err != nil {
		closeAll(files)
		return Message{}, nil, &GarbledError{err}
	}
	if m.Kind == DrivesNow && len(m.Drives.Attach) != len(files) {
		closeAll(files)
		return Message{}, nil, &GarbledError{fmt.Errorf("a drives message naming %d drives to attach, with %d descriptors", len(m.Drives.Attach), len(files))}
	}
	return m, files, nil
}

// GarbledError is a message that came but could not be read: the
// connection goes on.
type GarbledError struct{ Err error }

func (e *GarbledError) Error() string { return e.Err.Error() }
func (e *GarbledError) Unwrap() error { return e.Err }

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// SetReadDeadline unblocks a Receive at t (the end of following).
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// Close closes this end.
func (c *Conn) Close() error { return c.c.Close() }

// Calls are requests sent to the other process that wait for their
// answer, matched by ID: ddinit run's engine requests, PID 1's pack
// requests.
type Calls[R any] struct {
	mu      sync.Mutex
	next    int64
	waiting map[int64]chan R
}

// Begin registers a request: its ID, where its answer comes, and how to
// give up waiting.
func (c *Calls[R]) Begin() (id int64, answer <-chan R, forget func()) {
	ch := make(chan R, 1)
	c.mu.Lock()
	c.next++
	id = c.next
	if c.waiting == nil {
		c.waiting = map[int64]chan R{}
	}
	c.waiting[id] = ch
	c.mu.Unlock()
	return id, ch, func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}
}

// Answered hands the answer to request id to its waiter, if it still
// waits.
func (c *Calls[R]) Answered(id int64, r R) {
	c.mu.Lock()
	ch := c.waiting[id]
	delete(c.waiting, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// FirstAnswerMark is the mark ddinit run sends when an exposed socket
// passed the engine's first answer on: it ends the boot's timeline.
const FirstAnswerMark = "first answer through an exposed socket"

// ErrorOf is err as it crosses, of kind (an errdefs error, or the
// settings' rolled-back): for an error that does not carry its kind
// itself; its text stays as it is.
func ErrorOf(kind, err error) *Error {
	e := EncodeError(fmt.Errorf("%w: %w", kind, err))
	e.Message = err.Error()
	return e
}

// Abandon answers every request still waiting with what gone says for
// it: the other process went away, and no answer will come.
func (c *Calls[R]) Abandon(gone func(id int64) R) {
	c.mu.Lock()
	waiting := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	for id, ch := range waiting {
		ch <- gone(id)
	}
}

package launcher

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/kubeports"
	"github.com/ddinit/ddinit/mounts"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/steps"
	"github.com/ddinit/ddinit/transport"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// launcher is `ddinit run`'s state: the steps done, and the parts they
// made (each step's file says what it owns).
type launcher struct {
	// user is the config as the user gave it; cfg, the one this boot runs
	// (the version pack chosen in the data store).
	user, cfg config.Config
	log       *logrus.Entry
	ds        *mounts.DataStore // once locked
	steps     steps.Runner
	// bg are the goroutines that last as long as a PID 1 (settling, the
	// idle heap, the binary for the distros, pack requests): stopped and
	// awaited when it has gone.
	bg steps.Group

	mu          sync.Mutex
	bootError   string
	unixSockets []string               // control sockets to remove at exit
	hold        *holder                // between the exposed sockets and the engine: on demand
	calls       wire.Calls[wire.Reply] // engine requests to PID 1 awaiting their answer
	conn        *wire.Conn             // the socket to the running PID 1
	exposure    exposure               // the exposed sockets (expose.go)
	net         netState               // the link, its names and the port publisher (network.go)
	relays      relays                 // the proxy plan's relays and variables (relays.go)
	kube        *kubeports.Publisher   // the Kubernetes cluster published in the distro (kube.go)
	reach       reach                  // host-network listeners forwarded, container networks routed (reach.go)

	controlFiles []*os.File // the control sockets, for PID 1
	// begun is when this boot began (ddinit run's start, or the rollback's
	// boot); answered, whether an exposed socket has answered since.
	begun    time.Time
	answered atomic.Bool
	child    *child // PID 1, once started
	// replacing is the life of PID 1 from one to the next (switch.go).
	replacing replacing
	packMu    sync.Mutex // one pack request at a time
	// toolsOffered is the CLI tools version offered to the distros ("":
	// none).
	toolsOffered string
}

// replacing is PID 1's life from one to the next (guarded by l.mu).
type replacing struct {
	// switching is why the PID 1 being started replaces another (a live
	// switch, a rollback); "" for the first. packTrial: the version pack
	// it boots was just chosen and is on trial; packKeep, the image cache
	// entry to keep for a rollback.
	switching string
	packTrial bool
	packKeep  []string
	// packFailure is why the pack on trial failed: roll back.
	packFailure string
	// switchTo is why the running PID 1 is being replaced (a live
	// switch), until the next one starts; stopAsked, that ddinit run ends
	// with this PID 1 (a signal, a shutdown between two): no next boot.
	// engineUp: this PID 1's engine has been ready.
	switchTo  string
	stopAsked bool
	engineUp  bool
	// generation counts the PID 1s started: a pack request is answered
	// to, and switches, the PID 1 that asked only.
	generation int
	// standing answers the control sockets between two PID 1s.
	standing *control.Server
}

// exposure is what the expose step made and keeps from one PID 1 to the
// next (guarded by l.mu): the forwarders serving the exposed sockets, and
// the targets they dial, through the running PID 1's root.
type exposure struct {
	forwarders []*transport.Forwarder
	targets    map[string]string
	serving    sync.WaitGroup // the forwarders' Serve
}

// netState is what the network step made, for the boot it made it for:
// the link, the names it answers, the port publisher, and PID 1's root
// held open (guarded by l.mu).
type netState struct {
	link          *network.Link
	names         *localNames // host.docker.internal and gateway.docker.internal, once linked
	publisher     *network.Publisher
	stopPublisher func()
	rootDir       *os.File // PID 1's root, for iptables after PID 1 is gone
}

package hostports

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/cgroup"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
)

// Defaults of the Watcher's periods.
const (
	// DefaultInterval is how often the sockets are read while a
	// host-network container runs: the longest a new listener waits.
	DefaultInterval = 100 * time.Millisecond
	// retryEvery is how often a port found taken in the distro is tried
	// again.
	retryEvery = 2 * time.Second
)

// Watcher forwards the sockets host-network containers listen on in the
// engine's namespace to the distro's loopback (package doc). Run runs it;
// SetOn and State may be called from any goroutine, before Run too.
type Watcher struct {
	// Dial reaches dockerd's API. It may hold the dial while the engine is
	// stopped: nothing waits for it but the following of containers.
	Dial func(ctx context.Context) (net.Conn, error)
	// Namespace is the engine's network namespace, /proc/<pid1>/ns/net.
	Namespace string
	// ProcRoot is PID 1's procfs as the distro sees it,
	// /proc/<pid1>/root/proc: docker's State.Pid is a pid there.
	ProcRoot string
	// Procs lists a container's processes, given its State.Pid, as pids of
	// this process's /proc; nil: those of its cgroup (cgroupProcs).
	Procs func(containerPID int) ([]int, error)
	// Interval is the poll period (DefaultInterval when 0).
	Interval time.Duration
	Log      logrus.FieldLogger
	// Changed, when set, is called after State changed, from Run's
	// goroutine and under no lock.
	Changed func()

	once sync.Once
	kick chan struct{}

	mu         sync.Mutex
	off        bool
	containers map[string]container // the running host-network containers, by id
	gen        uint64               // counts the changes of containers
	state      []control.HostListener

	// Run's alone.
	ns       netns.NsHandle
	nsErr    error
	diag     *diag
	stat     *sockCounts
	counts   []byte    // the socket counts read before the last dump
	spareCnt []byte    // a buffer for the next poll's counts
	fullAt   time.Time // when the sockets are read whatever the counts
	cgroups  *cgroup.Hierarchy
	seen     uint64    // the gen the verdicts are for
	fresh    bool      // seen is not known yet (idle since)
	last     []uint32  // the inodes of the last poll's sockets, sorted
	known    bool      // last is the last poll's (not since a change)
	spare    []uint32  // a buffer for the next poll's inodes
	socks    []sock    // a buffer for the next dump
	wake     time.Time // when a poll must look again at the same sockets (zero: never)
	verdicts map[uint32]verdict
	fwd      map[fwdKey]*forward
	noIPv6   string
	failing  string // why the last dump failed, logged; "": it worked
	scanWarn uint64 // the gen a failed scan was last logged at (+1)

	// What the tests change: where sockets, their owners and the ports in
	// the distro come from, the distro's IPv6 loopback, the retry period
	// and the procfs of Procs' pids.
	dump       func() ([]sock, error)
	count      func(out []byte) ([]byte, error) // nil: dump at every poll
	owners     func(map[string]container) (map[uint32]string, error)
	listen     func(proto, addr string, dial func(context.Context) (net.Conn, error), log logrus.FieldLogger) (io.Closer, error)
	ipv6       func() string
	retryEvery time.Duration
	procDir    string
}

// container is a running host-network container.
type container struct {
	Name string
	Pid  int // State.Pid: its main process, in PID 1's pid namespace
}

// verdict says whose a socket is: a container's (by id), or none's (""),
// which holds until the containers change or, after a scan that failed,
// until until.
type verdict struct {
	container string
	until     time.Time
}

func (v verdict) stale(now time.Time) bool {
	return v.container == "" && !v.until.IsZero() && !now.Before(v.until)
}

// forward is a port served in the distro, or (port nil) one that could
// not be opened, and why.
type forward struct {
	dial    string
	who     string // the listener served, for the log
	port    io.Closer
	reason  string
	retryAt time.Time
	warned  bool // why it could not be opened was logged
	// unreachable: a connection that could not reach the listener was
	// logged.
	unreachable atomic.Bool
}

func (w *Watcher) setUp() {
	w.once.Do(func() {
		w.kick = make(chan struct{}, 1)
		w.containers = map[string]container{}
		w.verdicts = map[uint32]verdict{}
		w.fwd = map[fwdKey]*forward{}
		w.fresh = true
		if w.Log == nil {
			w.Log = logrus.StandardLogger()
		}
		if w.dump == nil {
			w.dump, w.count = w.dumpNamespace, w.countNamespace
		}
		if w.owners == nil {
			w.owners = w.scan
		}
		if w.listen == nil {
			w.listen = func(proto, addr string, dial func(context.Context) (net.Conn, error), log logrus.FieldLogger) (io.Closer, error) {
				return transport.ForwardPort(proto, addr, dial, log)
			}
		}
		if w.ipv6 == nil {
			w.ipv6 = distroIPv6
		}
		if w.retryEvery == 0 {
			w.retryEvery = retryEvery
		}
		if w.procDir == "" {
			w.procDir = "/proc"
		}
		w.ns, w.nsErr = netns.None(), errors.New("no network namespace given")
	})
}

// Run follows the containers and forwards their listeners until ctx
// ends; when it returns, every forward is closed. It is called once (a
// new PID 1 gets a new Watcher).
func (w *Watcher) Run(ctx context.Context) {
	w.setUp()
	if w.Namespace != "" {
		if w.ns, w.nsErr = netns.GetFromPath(w.Namespace); w.nsErr != nil {
			w.nsErr = fmt.Errorf("the engine's network namespace %s: %w", w.Namespace, w.nsErr)
		} else {
			defer w.ns.Close()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if w.Dial != nil {
		wg.Go(func() { w.follow(ctx) })
	}
	w.loop(ctx)
	cancel()
	wg.Wait()
}

// SetOn switches the forwarding on (the default) or off: off closes every
// forward and stops reading the sockets.
func (w *Watcher) SetOn(on bool) {
	w.setUp()
	w.mu.Lock()
	w.off = !on
	w.mu.Unlock()
	w.nudge()
}

// State is every socket the host-network containers listen on, with
// where it is served in the distro or why not; empty while off.
func (w *Watcher) State() []control.HostListener {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.state)
}

// nudge has the loop look again now.
func (w *Watcher) nudge() {
	select {
	case w.kick <- struct{}{}:
	default: // a look is due already
	}
}

// setContainers changes the containers (to what change makes of a copy)
// and, when they did change, has the loop look again.
func (w *Watcher) setContainers(change func(map[string]container) map[string]container) {
	w.mu.Lock()
	cs := change(maps.Clone(w.containers))
	changed := !maps.Equal(cs, w.containers)
	if changed {
		w.containers = cs
		w.gen++
	}
	w.mu.Unlock()
	if changed {
		w.nudge()
	}
}

// loop reads the sockets every Interval while on with a host-network
// container running, and waits for a change otherwise.
func (w *Watcher) loop(ctx context.Context) {
	defer w.idle()
	interval := cmp.Or(w.Interval, DefaultInterval)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		var tick <-chan time.Time
		w.mu.Lock()
		cs, gen, active := w.containers, w.gen, !w.off && len(w.containers) > 0
		w.mu.Unlock()
		if active {
			w.poll(cs, gen, time.Now())
			timer.Reset(interval)
			tick = timer.C
		} else {
			w.idle()
		}
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-tick:
		}
	}
}

// idle closes every forward and forgets what the sockets were.
func (w *Watcher) idle() {
	for _, k := range slices.Collect(maps.Keys(w.fwd)) {
		w.closeForward(k)
	}
	clear(w.verdicts)
	w.fresh = true
	if w.diag != nil {
		w.diag.Close()
		w.diag = nil
	}
	if w.stat != nil {
		w.stat.Close()
		w.stat = nil
	}
	w.counts = w.counts[:0]
	w.publish(nil)
}

// poll reads the listening sockets, finds whose new ones are, and brings
// the forwards in line.
func (w *Watcher) poll(cs map[string]container, gen uint64, now time.Time) {
	if w.fresh || gen != w.seen {
		// A container that starts and listens at once may be seen before
		// its start event: "none's" holds only for the containers it was
		// found with.
		for ino, v := range w.verdicts {
			if _, ok := cs[v.container]; !ok {
				delete(w.verdicts, ino)
			}
		}
		w.seen, w.fresh, w.known = gen, false, false
		w.noIPv6 = w.ipv6()
	}
	// The namespace's socket counts as at the last dump, the same
	// containers, nothing to try again, the last full read recent: the
	// sockets are as they were. This is almost every poll, and a dump
	// walks the kernel's socket tables (~0.6 ms of CPU here, four of
	// them), the counts are two small reads.
	var counts []byte
	if w.count != nil {
		var err error
		if counts, err = w.count(w.spareCnt[:0]); err != nil {
			counts = nil // unknown: dump
		} else if w.known && bytes.Equal(counts, w.counts) && now.Before(w.fullAt) && (w.wake.IsZero() || now.Before(w.wake)) {
			w.spareCnt = counts
			return
		}
	}
	socks, err := w.dump()
	if err != nil {
		// The forwards stay as they are: a dump that failed says nothing
		// of the listeners.
		if why := err.Error(); why != w.failing {
			w.failing = why
			w.Log.WithError(err).Warn("cannot read the sockets of the engine's namespace: host-network ports are not followed")
		}
		return
	}
	if w.failing != "" {
		w.failing = ""
		w.Log.Info("the sockets of the engine's namespace are read again")
	}
	// Counts read before the dump: a change after them shows at the next
	// poll.
	if counts != nil {
		w.counts, w.spareCnt = counts, w.counts
	} else {
		w.counts = w.counts[:0]
	}
	w.fullAt = now.Add(fullEvery)
	// The same sockets as at the last poll (a socket's inode is its own
	// while it lives, and a listening socket's address does not change),
	// the same containers, nothing to try again: nothing to do. This is
	// almost every poll, and must cost next to nothing.
	inodes := w.spare[:0]
	for _, s := range socks {
		inodes = append(inodes, s.Inode)
	}
	slices.Sort(inodes)
	if w.known && slices.Equal(inodes, w.last) && (w.wake.IsZero() || now.Before(w.wake)) {
		w.spare = inodes
		return
	}
	w.last, w.spare, w.known = inodes, w.last, true
	present := make(map[uint32]bool, len(socks))
	unknown := false
	for _, s := range socks {
		present[s.Inode] = true
		if v, ok := w.verdicts[s.Inode]; !ok || v.stale(now) {
			unknown = true
		}
	}
	for ino := range w.verdicts {
		if !present[ino] {
			delete(w.verdicts, ino) // its inode may be another socket's later
		}
	}
	if unknown {
		w.attribute(socks, cs, gen, now)
	}
	var ls []listener
	have := map[listener]bool{}
	for _, s := range socks {
		id := w.verdicts[s.Inode].container
		if id == "" {
			continue
		}
		l := listener{Container: id, Name: cs[id].Name, Proto: s.Proto, Addr: s.Addr, V6Only: s.V6Only}
		if !have[l] { // SO_REUSEPORT: one listener, several sockets
			have[l] = true
			ls = append(ls, l)
		}
	}
	entries, want := plan(ls, w.noIPv6)
	w.apply(entries, want, now)
	w.publish(entries)
	// When a poll must do more than compare: a socket no one's after a
	// scan that failed, or a port to try again.
	w.wake = time.Time{}
	later := func(t time.Time) {
		if !t.IsZero() && (w.wake.IsZero() || t.Before(w.wake)) {
			w.wake = t
		}
	}
	for _, v := range w.verdicts {
		later(v.until)
	}
	for _, f := range w.fwd {
		if f.port == nil {
			later(f.retryAt)
		}
	}
}

// attribute gives each socket without a verdict one, from the sockets
// the containers' processes hold.
func (w *Watcher) attribute(socks []sock, cs map[string]container, gen uint64, now time.Time) {
	owners, err := w.owners(cs)
	var until time.Time
	if err != nil {
		// A socket of a container not read is no one's for now: tried
		// again after retryEvery, not at every poll.
		until = now.Add(w.retryEvery)
		log := w.Log.WithError(err)
		if w.scanWarn != gen+1 {
			w.scanWarn = gen + 1
			log.Warn("cannot read the processes of a host-network container: its ports may not be forwarded")
		} else {
			log.Debug("cannot read the processes of a host-network container")
		}
	}
	for _, s := range socks {
		if v, ok := w.verdicts[s.Inode]; ok && !v.stale(now) {
			continue
		}
		if id, ok := owners[s.Inode]; ok {
			w.verdicts[s.Inode] = verdict{container: id}
		} else {
			w.verdicts[s.Inode] = verdict{until: until}
		}
	}
}

// scan maps the inodes of the sockets the containers' processes hold to
// the container.
func (w *Watcher) scan(cs map[string]container) (map[uint32]string, error) {
	owners := map[uint32]string{}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(cs)) {
		pids, err := w.procs(cs[id].Pid)
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", engineclient.ShortID(id), err))
			continue
		}
		inodes := map[uint32]bool{}
		socketInodes(w.procDir, pids, inodes)
		for ino := range inodes {
			if _, ok := owners[ino]; !ok {
				owners[ino] = id
			}
		}
	}
	return owners, errors.Join(errs...)
}

// procs is a container's processes: Procs', or its cgroup's.
func (w *Watcher) procs(containerPID int) ([]int, error) {
	if w.Procs != nil {
		return w.Procs(containerPID)
	}
	if w.cgroups == nil {
		h, err := cgroup.Detect("/sys/fs/cgroup")
		if err != nil {
			return nil, err
		}
		w.cgroups = &h
	}
	return cgroupProcs(*w.cgroups, w.ProcRoot, containerPID)
}

// countNamespace reads the socket counts of the engine's namespace, from
// its sockstat files opened there once.
func (w *Watcher) countNamespace(out []byte) ([]byte, error) {
	if w.stat == nil {
		if w.nsErr != nil {
			return nil, w.nsErr
		}
		c, err := openSockCounts(w.ns)
		if err != nil {
			// Not tried again at every poll (each try enters the
			// namespace): the sockets are dumped at every poll instead.
			w.Log.WithError(err).Debug("no socket counts: the sockets are read at every poll")
			w.count = nil
			return nil, err
		}
		w.stat = c
	}
	out, err := w.stat.read(out)
	if err != nil {
		w.stat.Close()
		w.stat = nil
	}
	return out, err
}

// dumpNamespace reads the listening sockets of the engine's namespace,
// through a sock_diag socket made there once.
func (w *Watcher) dumpNamespace() ([]sock, error) {
	if w.diag == nil {
		if w.nsErr != nil {
			return nil, w.nsErr
		}
		d, err := openDiag(w.ns)
		if err != nil {
			return nil, err
		}
		w.diag = d
	}
	socks, err := w.diag.listeners(w.socks[:0])
	w.socks = socks[:0]
	if err != nil && !errors.Is(err, errInterrupted) {
		// Made anew at the next poll: nothing of a broken dump is left.
		w.diag.Close()
		w.diag = nil
	}
	return socks, err
}

// apply closes the forwards no longer wanted and opens the wanted ones,
// and tries again, every retryEvery, one that could not be opened.
func (w *Watcher) apply(entries []entry, want map[fwdKey]string, now time.Time) {
	open := map[fwdKey]string{}
	for k, f := range w.fwd {
		open[k] = f.dial
	}
	closing, opening := diff(open, want)
	for _, k := range closing {
		w.closeForward(k)
	}
	for _, k := range opening {
		f := &forward{dial: want[k]}
		for _, e := range entries { // the first is the one served (plan)
			if e.Distro == k.Distro && e.l.Proto == k.Proto {
				f.who = containerName(e.l) + " " + e.l.Addr.String()
				break
			}
		}
		w.fwd[k] = f
	}
	for _, k := range slices.SortedFunc(maps.Keys(w.fwd), func(a, b fwdKey) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Distro, b.Distro))
	}) {
		if f := w.fwd[k]; f.port == nil && !now.Before(f.retryAt) {
			w.openForward(k, f, now)
		}
	}
}

// openForward listens on k in the distro, each connection dialling f's
// target in the engine's namespace.
func (w *Watcher) openForward(k fwdKey, f *forward, now time.Time) {
	log := w.Log.WithFields(logrus.Fields{"listener": f.who, "proto": k.Proto, "distro": k.Distro, "to": f.dial})
	target, ns, nsErr := f.dial, w.ns, w.nsErr
	dial := func(ctx context.Context) (net.Conn, error) {
		var conn net.Conn
		err := nsErr
		if err == nil {
			conn, err = network.DialIn(ctx, ns, k.Proto, target)
		}
		// Why a connection is closed at once is logged once a forward.
		if err != nil && f.unreachable.CompareAndSwap(false, true) {
			log.WithError(err).Warn("a connection to a host-network container's port cannot reach it")
		}
		return conn, err
	}
	port, err := w.listen(k.Proto, k.Distro, dial, log)
	if err == nil {
		f.port, f.reason = port, ""
		log.Info("host-network port forwarded to the distro")
		return
	}
	f.reason, f.retryAt = whyNot(k, err), now.Add(w.retryEvery)
	if !f.warned {
		f.warned = true
		_, port, _ := net.SplitHostPort(k.Distro)
		log.WithError(err).Warn(f.reason + ". Free it (`ss -ltnup 'sport = :" + port + "'` names what listens) and it is forwarded within seconds")
	}
}

// whyNot says why k could not be opened in the distro.
func whyNot(k fwdKey, err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return k.Distro + " is taken in the distro by another program: not forwarded"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Sprintf("%s cannot be bound in the distro (%v): not forwarded", k.Distro, err)
	}
	return fmt.Sprintf("%s cannot be listened on in the distro (%v): not forwarded", k.Distro, err)
}

// closeForward closes k, and the connections it carries.
func (w *Watcher) closeForward(k fwdKey) {
	f := w.fwd[k]
	delete(w.fwd, k)
	if f.port != nil {
		f.port.Close()
		w.Log.WithFields(logrus.Fields{"listener": f.who, "proto": k.Proto, "distro": k.Distro}).Info("host-network port no longer forwarded")
	}
}

// publish makes State what entries and the forwards say, and tells
// Changed when it changed.
func (w *Watcher) publish(entries []entry) {
	var state []control.HostListener
	for _, e := range entries {
		h := e.hostListener()
		if f := w.fwd[fwdKey{e.l.Proto, e.Distro}]; e.Distro != "" && (f == nil || f.port == nil) {
			h.Distro, h.Reason = "", cmp.Or(f.reasonOr(), "not forwarded yet")
		}
		state = append(state, h)
	}
	slices.SortFunc(state, func(a, b control.HostListener) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Listen, b.Listen), cmp.Compare(a.Container, b.Container),
			cmp.Compare(a.Distro, b.Distro), cmp.Compare(a.Reason, b.Reason))
	})
	w.mu.Lock()
	changed := !slices.Equal(state, w.state)
	if changed {
		w.state = state
	}
	w.mu.Unlock()
	if changed && w.Changed != nil {
		w.Changed()
	}
}

func (f *forward) reasonOr() string {
	if f == nil {
		return ""
	}
	return f.reason
}

// distroIPv6 says why the distro has no IPv6 loopback, or "" when [::1]
// can be bound.
func distroIPv6() string {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return fmt.Sprintf("the distro has no IPv6 loopback ([::1] cannot be bound: %v): not forwarded", err)
	}
	l.Close()
	return ""
}

package initd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/packs"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
)

// Version packs switched at the next boot: the frontend (PUT
// /version-pack) or `ddinit pack use` names a pack; ddinit run — which
// sees the distro's paths and the image cache, as PID 1 in its root does
// not — verifies and caches it while the engine runs, checks it defines
// dockerd and does not take the data store back to an older engine, and
// records the choice in the data store, where it wins over the config's
// pack. The next boot uses it on trial: if dockerd is not ready within
// settingsDeadline, the previous pack boots again in the same run. A
// rollback asked for is checked the same way (the automatic one of a pack
// that failed its trial is not: it returns to the engine the store ran).

// choosePack (ddinit run) makes the data store's choice the pack this
// boot uses, over the config's.
func (l *launcher) choosePack() {
	c, err := packs.LoadChoice(l.ds.Path(packs.ChoiceFile))
	if err != nil {
		l.log.WithError(err).Warn("the version pack choice cannot be read: booting the config's pack")
		return
	}
	l.cfg.PackTrial, l.cfg.PackKeep = false, nil
	if c.Current == nil {
		return
	}
	l.cfg.VersionPack, l.cfg.PackDigest, l.cfg.PackTrial = c.Current.Path, c.Current.Digest, c.Trial
	if c.Previous != nil {
		l.cfg.PackKeep = []string{c.Previous.Digest}
	}
	l.log.WithField("pack", c.Current.Path).WithField("trial", c.Trial).Info("booting the version pack chosen in the data store")
}

// packProved (ddinit run): the pack on trial brought the engine up.
func (l *launcher) packProved() {
	path := l.ds.Path(packs.ChoiceFile)
	c, err := packs.LoadChoice(path)
	// The verdict is the pack this boot ran: another chosen meanwhile
	// keeps its own trial.
	if err != nil || !c.Trial || c.Current == nil || c.Current.Digest != l.cfg.PackDigest {
		return
	}
	c.Trial = false
	if err := c.Save(path); err != nil {
		l.log.WithError(err).Warn("the version pack's trial could not be ended")
		return
	}
	l.log.WithField("pack", c.Current.Path).Info("the new version pack runs: it stays")
}

// rollBack (ddinit run), after PID 1 exited: when the pack on trial
// failed, the previous pack becomes the current one again; it reports
// whether to boot again.
func (l *launcher) rollBack() bool {
	l.mu.Lock()
	why := l.packFailure
	l.packFailure, l.bootError = "", ""
	l.mu.Unlock()
	if why == "" {
		return false
	}
	path := l.ds.Path(packs.ChoiceFile)
	c, err := packs.LoadChoice(path)
	if err != nil || c.Current == nil || c.Previous == nil {
		l.log.WithField("reason", why).Error("the version pack failed and there is none to roll back to")
		return false
	}
	if c.Current.Digest != l.cfg.PackDigest {
		// Another pack was chosen while this one was on trial: it boots
		// next, on its own trial; this one's failure is recorded.
		c.LastFailure, c.FailedAt = fmt.Sprintf("%s: %s", l.cfg.VersionPack, why), time.Now()
		if err := c.Save(path); err != nil {
			l.log.WithError(err).Error("the failure could not be recorded")
		}
		return true
	}
	failed := c.Current
	c.Current, c.Previous, c.Trial = c.Previous, failed, false
	c.LastFailure, c.FailedAt = fmt.Sprintf("%s: %s", failed.Path, why), time.Now()
	if err := c.Save(path); err != nil {
		l.log.WithError(err).Error("the rollback could not be recorded")
		return false
	}
	l.log.WithFields(map[string]any{"failed": failed.Path, "reason": why, "back to": c.Current.Path}).Error("the new version pack did not bring the engine up: rolling back")
	return true
}

// packRequest is PID 1 passing on a PUT /version-pack; packReply answers.
type packRequest struct {
	ID       int64  `json:"id"`
	Path     string `json:"path,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Force    bool   `json:"force,omitempty"`
	Rollback bool   `json:"rollback,omitempty"`
	// Running is the dockerd version of the pack this boot runs ("" when
	// its manifest names none), RunningDigest its digest ("" while no pack
	// runs): it writes the data store now, before its record is written
	// (when dockerd is ready), so no switch may go below it either.
	Running       string `json:"running,omitempty"`
	RunningDigest string `json:"runningDigest,omitempty"`
	// Live: switch now, replacing PID 1 (see switch.go).
	Live bool `json:"live,omitempty"`
}

type packReply struct {
	ID    int64             `json:"id"`
	Error string            `json:"error,omitempty"`
	Kind  string            `json:"kind,omitempty"` // "invalid", "conflict", "precondition"
	Packs control.PackState `json:"packs"`
}

// err is the reply's error, of the kind the control API answers with
// (control.StatusCode): invalid 400, conflict 409, precondition 412.
func (r packReply) err() error {
	if r.Error == "" {
		return nil
	}
	kind := map[string]error{"invalid": errdefs.ErrInvalidArgument, "conflict": errdefs.ErrConflict}[r.Kind]
	if kind == nil {
		kind = errdefs.ErrFailedPrecondition
	}
	return fmt.Errorf("%w: %s", kind, r.Error)
}

// usePack (ddinit run) verifies, caches and chooses the pack a request of
// the PID 1 of generation gen names, or rolls back to the previous one;
// nothing changes on an error. One request at a time: a live one claims
// the switch before the choice is recorded.
func (l *launcher) usePack(req packRequest, gen int) packReply {
	l.packMu.Lock()
	defer l.packMu.Unlock()
	reply := packReply{ID: req.ID}
	fail := func(kind string, err error) packReply {
		reply.Kind, reply.Error = kind, err.Error()
		return reply
	}
	l.mu.Lock()
	err := l.packRequestAllowed(gen, req.Live)
	l.mu.Unlock()
	if err != nil {
		return fail("conflict", err)
	}
	path := l.ds.Path(packs.ChoiceFile)
	c, err := packs.LoadChoice(path)
	if err != nil {
		return fail("precondition", err)
	}
	inUse := &packs.Ref{Path: l.cfg.VersionPack, Digest: l.cfg.PackDigest}
	if c.Current != nil {
		inUse = c.Current
	}
	if d, _, err := rootfs.ExpectedDigest(inUse.Path, inUse.Digest); err == nil {
		inUse.Digest = d // as the cache names it: kept there to roll back to
	}
	if inUse.Engine == "" && req.RunningDigest != "" && inUse.Digest == req.RunningDigest {
		inUse.Engine = req.Running // the config's pack, which runs
	}
	if req.Rollback {
		if c.Previous == nil {
			return fail("precondition", errors.New("no previous version pack to roll back to"))
		}
		back := *c.Previous
		if back.Engine == "" {
			back.Engine = l.cachedPackEngine(back) // chosen before its version was kept
		}
		if err := l.mayRun(back.Engine, req); err != nil && !req.Force {
			return fail("conflict", fmt.Errorf("no rollback to version pack %s: %w (force to roll back anyway: --force, \"force\": true)", back.Path, err))
		}
		c.Current, c.Previous, c.Trial = &back, inUse, false
	} else {
		if req.Path == "" {
			return fail("invalid", errors.New("path: name the version pack image"))
		}
		cache, err := rootfs.OpenCache(l.ds.Path("isocache"), l.log.WithField("component", "packs"))
		if err != nil {
			return fail("precondition", err)
		}
		layer, err := cache.Ensure(rootfs.Source{Name: "version pack", Path: req.Path, Digest: req.Digest}, false)
		cache.Close()
		if err != nil {
			return fail("invalid", err)
		}
		m, err := packs.Inspect(layer.Image)
		if err != nil {
			return fail("invalid", fmt.Errorf("version pack %s: %w", req.Path, err))
		}
		if err := l.mayRun(m.Engine(), req); err != nil && !req.Force {
			return fail("conflict", fmt.Errorf("version pack %s: %w (force to switch anyway: --force, \"force\": true)", req.Path, err))
		}
		next := &packs.Ref{Path: req.Path, Digest: layer.Digest, Engine: m.Engine()}
		// The pack to roll back to is one that brought the engine up: while
		// the current choice is still on trial, the previous one stays.
		if next.Digest != inUse.Digest && !c.Trial {
			c.Previous = inUse
		}
		c.Current, c.Trial = next, true
	}
	// Checked again as it is saved: the engine may have been replaced, a
	// switch begun or a shutdown asked while the pack was hashed.
	if err := l.saveChoice(gen, req.Live, func() error { return c.Save(path) }); err != nil {
		kind := "conflict"
		if errors.Is(err, errdefs.ErrFailedPrecondition) {
			kind = "precondition"
		}
		return fail(kind, err)
	}
	if req.Live {
		l.log.WithField("pack", c.Current.Path).Info("version pack chosen: switching now")
	} else {
		l.log.WithField("pack", c.Current.Path).Info("version pack chosen for the next boot")
	}
	reply.Packs = packState(c, nil)
	return reply
}

// mayRun checks that a pack with dockerd engine does not take the data
// store back to an older engine than one that wrote it: the last one
// ready on it (its record), and the one running now (req's), which
// writes it before it is ready and recorded. A version that cannot be
// read, or a record that cannot, fails the check.
func (l *launcher) mayRun(engine string, req packRequest) error {
	var store []string
	rec, err := packs.LoadRecord(l.ds.Path(packs.RecordFile))
	switch {
	case err != nil:
		return fmt.Errorf("which dockerd ran on this data store cannot be read, so dockerd %q cannot be known not to be older: %w", engine, err)
	case rec.Ran():
		store = append(store, rec.Engine)
	}
	if req.RunningDigest != "" {
		store = append(store, req.Running)
	}
	return packs.CheckEngine(engine, store...)
}

// cachedPackEngine reads the dockerd version of a pack in the image cache
// (or at its path) from its manifest; "" when it cannot.
func (l *launcher) cachedPackEngine(r packs.Ref) string {
	log := l.log.WithField("pack", r.Path)
	cache, err := rootfs.OpenCache(l.ds.Path("isocache"), l.log.WithField("component", "packs"))
	if err != nil {
		log.WithError(err).Warn("the image cache cannot be opened: the pack's dockerd version is not known")
		return ""
	}
	defer cache.Close()
	layer, err := cache.Ensure(rootfs.Source{Name: "version pack", Path: r.Path, Digest: r.Digest}, false)
	if err != nil {
		log.WithError(err).Warn("the pack is neither cached nor readable: its dockerd version is not known")
		return ""
	}
	m, err := packs.Inspect(layer.Image)
	if err != nil {
		log.WithError(err).Warn("the pack does not read: its dockerd version is not known")
		return ""
	}
	return m.Engine()
}

// packName is how a switch names a pack: its file, and its engine.
func packName(r *control.PackRef) string {
	if r == nil {
		return "the version pack chosen"
	}
	name := filepath.Base(r.Path)
	if r.Engine != "" {
		name += " (dockerd " + r.Engine + ")"
	}
	return name
}

// packState is the choice as /status shows it.
func packState(c packs.Choice, running *control.PackRef) control.PackState {
	st := control.PackState{Running: running, Trial: c.Trial, LastFailure: c.LastFailure}
	ref := func(r *packs.Ref) *control.PackRef {
		if r == nil {
			return nil
		}
		return &control.PackRef{Path: r.Path, Digest: r.Digest, Engine: r.Engine}
	}
	st.Next, st.Previous = ref(c.Current), ref(c.Previous)
	return st
}

// watchTrial (PID 1) judges a pack on trial: dockerd ready within the
// deadline, it stays (ddinit run is told); not, ddinit run is told why,
// with dockerd's own words, and PID 1 shuts down for the rollback.
func (in *pid1) watchTrial(sup *services.Supervisor) {
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.settingsDeadline())
	defer cancel()
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool { return st.Ready })
	if err == nil && st.Ready {
		in.events.Encode(event{Event: "pack-ready"}) // unreported only if ddinit run is gone
		return
	}
	if errors.Is(err, errdefs.ErrUnavailable) {
		return // stopping anyway
	}
	st = dockerdStatus(sup)
	why := fmt.Sprintf("dockerd was not ready within %s", in.cfg.settingsDeadline())
	if st.LastExit != nil {
		why += ": " + lastWords(st.LastExit)
	} else if st.Reason != "" {
		why += ": " + st.Reason
	}
	in.log.WithField("reason", why).Error("the new version pack did not bring the engine up")
	in.events.Encode(event{Event: "pack-failed", Error: why})
	select {
	case in.stop <- "the version pack on trial failed: " + why:
	default:
	}
}

// calls are requests sent to the other process that wait for their
// answer, matched by ID: ddinit run's engine requests, PID 1's pack
// requests.
type calls[R any] struct {
	mu      sync.Mutex
	next    int64
	waiting map[int64]chan R
}

// begin registers a request: its ID, where its answer comes, and how to
// give up waiting.
func (c *calls[R]) begin() (id int64, answer <-chan R, forget func()) {
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

// answered hands the answer to request id to its waiter, if it still waits.
func (c *calls[R]) answered(id int64, r R) {
	c.mu.Lock()
	ch := c.waiting[id]
	delete(c.waiting, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// UsePack implements control.Backend: ddinit run verifies, caches and
// records the choice; the answer's kind is the error's.
func (c backend) UsePack(req control.UsePack) (control.PackState, error) {
	in := c.in
	id, ch, forget := in.packCalls.begin()
	pr := &packRequest{ID: id, Path: req.Path, Digest: req.Digest, Force: req.Force, Rollback: req.Rollback, Live: req.Live}
	if r := in.runningPack(); r != nil {
		pr.Running, pr.RunningDigest = r.Engine, r.Digest
	}
	if !in.tellLauncher(launcherMessage{Pack: pr}) {
		forget()
		return control.PackState{}, fmt.Errorf("%w: ddinit run does not answer", errdefs.ErrUnavailable)
	}
	var r packReply
	select {
	case r = <-ch:
	case <-time.After(10 * time.Minute): // a large pack is copied and hashed
		forget()
		return control.PackState{}, fmt.Errorf("%w: ddinit run did not finish checking the pack", errdefs.ErrUnavailable)
	}
	if err := r.err(); err != nil {
		return control.PackState{}, err
	}
	st := r.Packs
	st.Running = in.runningPack()
	return st, nil
}

// runningPack is the version pack this boot runs on (nil before the
// root is assembled).
func (in *pid1) runningPack() *control.PackRef {
	in.mu.Lock()
	root, comps := in.root, in.components
	in.mu.Unlock()
	if root == nil || len(root.Layers) < 2 {
		return nil
	}
	l := root.Layers[len(root.Layers)-1]
	ref := &control.PackRef{Path: l.Source, Digest: l.Digest}
	for _, c := range comps {
		if c.Name == "dockerd" {
			ref.Engine = c.Version
		}
	}
	return ref
}

// packStatus (PID 1) is /status's packs: the running one and the choice.
func (in *pid1) packStatus() *control.PackState {
	c, err := packs.LoadChoice(in.storePath(packs.ChoiceFile))
	if err != nil {
		c = packs.Choice{}
	}
	st := packState(c, in.runningPack())
	return &st
}

// awaitEngine (PID 1) tells ddinit run when dockerd is ready for the first
// time this boot, however it got there (its first start, or one the
// restart policy made after it): ddinit run passes on the clients it held
// when this PID 1 replaced another.
func (in *pid1) awaitEngine(sup *services.Supervisor) {
	if _, err := sup.Await(context.Background(), "dockerd", func(st services.Status) bool { return st.Ready }); err != nil {
		return // stopping, or a pack without dockerd
	}
	in.mu.Lock()
	in.engineWasUp = true
	in.mu.Unlock()
	in.events.Encode(event{Event: "engine-ready"}) // unreported only if ddinit run is gone
}

// recordEngine (PID 1) keeps, once dockerd is ready, which pack and engine
// version last ran on the data store.
func (in *pid1) recordEngine() {
	r := in.runningPack()
	if r == nil {
		return
	}
	if err := (packs.Record{Digest: r.Digest, Engine: r.Engine, At: time.Now()}).Save(in.storePath(packs.RecordFile)); err != nil {
		in.log.WithError(err).Warn("which engine last ran on the data store was not recorded")
	}
}

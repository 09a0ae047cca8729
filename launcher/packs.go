package launcher

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/packs"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/wire"
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
	l.cfg = l.user
	l.replacing.packTrial, l.replacing.packKeep = false, nil
	c, err := packs.LoadChoice(l.ds.Path(packs.ChoiceFile))
	if err != nil {
		l.log.WithError(err).Warn("the version pack choice cannot be read: booting the config's pack")
		return
	}
	if c.Current == nil {
		return
	}
	l.cfg.VersionPack, l.cfg.PackDigest, l.replacing.packTrial = c.Current.Path, c.Current.Digest, c.Trial
	if c.Previous != nil {
		l.replacing.packKeep = []string{c.Previous.Digest}
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
	why := l.replacing.packFailure
	l.replacing.packFailure, l.bootError = "", ""
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

// usePack (ddinit run) verifies, caches and chooses the pack a request of
// the PID 1 of generation gen names, or rolls back to the previous one;
// nothing changes on an error. One request at a time: a live one claims
// the switch before the choice is recorded.
func (l *launcher) usePack(ask wire.PackAsk, gen int) wire.PackAnswer {
	l.packMu.Lock()
	defer l.packMu.Unlock()
	req := ask.Use
	reply := wire.PackAnswer{ID: ask.ID}
	fail := func(kind, err error) wire.PackAnswer {
		reply.Err = wire.ErrorOf(kind, err)
		return reply
	}
	l.mu.Lock()
	err := l.packRequestAllowed(gen, req.Live)
	l.mu.Unlock()
	if err != nil {
		return fail(errdefs.ErrConflict, err)
	}
	path := l.ds.Path(packs.ChoiceFile)
	c, err := packs.LoadChoice(path)
	if err != nil {
		return fail(errdefs.ErrFailedPrecondition, err)
	}
	inUse := &packs.Ref{Path: l.cfg.VersionPack, Digest: l.cfg.PackDigest}
	if c.Current != nil {
		inUse = c.Current
	}
	if d, _, err := rootfs.ExpectedDigest(inUse.Path, inUse.Digest); err == nil {
		inUse.Digest = d // as the cache names it: kept there to roll back to
	}
	if inUse.Engine == "" && ask.RunningDigest != "" && inUse.Digest == ask.RunningDigest {
		inUse.Engine = ask.Running // the config's pack, which runs
	}
	if req.Rollback {
		if c.Previous == nil {
			return fail(errdefs.ErrFailedPrecondition, errors.New("no previous version pack to roll back to"))
		}
		back := *c.Previous
		if back.Engine == "" {
			back.Engine = l.cachedPackEngine(back) // chosen before its version was kept
		}
		if err := l.mayRun(back.Engine, ask); err != nil {
			if !req.Force {
				return fail(errdefs.ErrConflict, fmt.Errorf("no rollback to version pack %s: %w (force to roll back anyway: --force, \"force\": true)", back.Path, err))
			}
			reply.Packs.Warning = forcedWarning(back.Path, err)
		}
		c.Current, c.Previous, c.Trial = &back, inUse, false
	} else {
		if req.Path == "" {
			return fail(errdefs.ErrInvalidArgument, errors.New("path: name the version pack image"))
		}
		cache, err := rootfs.OpenCache(l.ds.Path("isocache"), l.log.WithField("component", "packs"))
		if err != nil {
			return fail(errdefs.ErrFailedPrecondition, err)
		}
		layer, err := cache.Ensure(rootfs.Source{Name: "version pack", Path: req.Path, Digest: req.Digest}, false)
		cache.Close()
		if err != nil {
			return fail(errdefs.ErrInvalidArgument, err)
		}
		m, err := packs.Inspect(layer.Image)
		if err != nil {
			return fail(errdefs.ErrInvalidArgument, fmt.Errorf("version pack %s: %w", req.Path, err))
		}
		if err := l.mayRun(m.Engine(), ask); err != nil {
			if !req.Force {
				return fail(errdefs.ErrConflict, fmt.Errorf("version pack %s: %w (force to switch anyway: --force, \"force\": true)", req.Path, err))
			}
			reply.Packs.Warning = forcedWarning(req.Path, err)
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
		reply.Err = wire.EncodeError(err) // of its own kind
		return reply
	}
	if req.Live {
		l.log.WithField("pack", c.Current.Path).Info("version pack chosen: switching now")
	} else {
		l.log.WithField("pack", c.Current.Path).Info("version pack chosen for the next boot")
	}
	warning := reply.Packs.Warning
	reply.Packs = c.State(nil)
	reply.Packs.Warning = warning
	if warning != "" {
		l.log.WithField("pack", c.Current.Path).Warn(warning)
	}
	return reply
}

// mayRun checks that a pack with dockerd engine does not take the data
// store back to an older engine than one that wrote it: the last one
// ready on it (its record), and the one running now (req's), which
// writes it before it is ready and recorded. A version that cannot be
// read, or a record that cannot, fails the check.
func (l *launcher) mayRun(engine string, req wire.PackAsk) error {
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

// forcedWarning is what a choice forced past the version check says may
// be lost.
func forcedWarning(pack string, refused error) string {
	return fmt.Sprintf("warning: version pack %s was forced past the check (%v): an older dockerd may not read what a newer one wrote to this data store — images, containers, networks and volumes made or changed since may be unusable or lost; a backup of the data distro first is wise", pack, refused)
}

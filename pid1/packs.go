package pid1

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/packs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/wire"
)

// watchTrial (PID 1) judges a pack on trial: dockerd ready within the
// deadline, it stays (ddinit run is told); not, ddinit run is told why,
// with dockerd's own words, and PID 1 shuts down for the rollback.
func (in *pid1) watchTrial(ctx context.Context, sup *services.Supervisor) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.SettingsDeadlineOr())
	defer cancel()
	st, err := sup.Await(ctx, "dockerd", func(st services.Status) bool { return st.Ready })
	if err == nil && st.Ready {
		in.tell(wire.Message{Kind: wire.PackProved}) // unreported only if ddinit run is gone
		return
	}
	if errors.Is(err, errdefs.ErrUnavailable) || ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		return // stopping anyway
	}
	st = dockerdStatus(sup)
	why := fmt.Sprintf("dockerd was not ready within %s", in.cfg.SettingsDeadlineOr())
	if st.LastExit != nil {
		why += ": " + lastWords(st.LastExit)
	} else if st.Reason != "" {
		why += ": " + st.Reason
	}
	in.log.WithField("reason", why).Error("the new version pack did not bring the engine up")
	in.tell(wire.Message{Kind: wire.PackFailed, Err: &wire.Error{Message: why}})
	select {
	case in.stop <- "the version pack on trial failed: " + why:
	default:
	}
}

// UsePack implements control.Backend: ddinit run verifies, caches and
// records the choice; the answer's kind is the error's.
func (c backend) UsePack(req control.UsePack) (control.PackState, error) {
	in := c.in
	id, ch, forget := in.packCalls.Begin()
	ask := &wire.PackAsk{ID: id, Use: req}
	if r := in.runningPack(); r != nil {
		ask.Running, ask.RunningDigest = r.Engine, r.Digest
	}
	if !in.tell(wire.Message{Kind: wire.PackRequest, Pack: ask}) {
		forget()
		return control.PackState{}, fmt.Errorf("%w: ddinit run does not answer", errdefs.ErrUnavailable)
	}
	var r wire.PackAnswer
	select {
	case r = <-ch:
	case <-time.After(10 * time.Minute): // a large pack is copied and hashed
		forget()
		return control.PackState{}, fmt.Errorf("%w: ddinit run did not finish checking the pack", errdefs.ErrUnavailable)
	}
	if err := r.Err.Err(); err != nil {
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
	root := in.root
	in.mu.Unlock()
	if root == nil || len(root.Layers) < 2 {
		return nil
	}
	l := root.Layers[len(root.Layers)-1]
	return &control.PackRef{Path: l.Source, Digest: l.Digest, Engine: in.componentVersion("dockerd")}
}

// packStatus (PID 1) is /status's packs: the running one and the choice.
func (in *pid1) packStatus() *control.PackState {
	c, err := packs.LoadChoice(in.storePath(packs.ChoiceFile))
	if err != nil {
		c = packs.Choice{}
	}
	st := c.State(in.runningPack())
	return &st
}

// awaitEngine (PID 1) tells ddinit run when dockerd is ready for the first
// time this boot, however it got there (its first start, or one the
// restart policy made after it): ddinit run passes on the clients it held
// when this PID 1 replaced another. Then it lets the distros reach
// containers by their addresses (trustOnce). A wait cut short by the
// boot's supervisor being replaced (a Kubernetes switch or reset before
// dockerd was first ready) leaves that to startEngine.
func (in *pid1) awaitEngine(ctx context.Context, sup *services.Supervisor) {
	if _, err := sup.Await(ctx, "dockerd", func(st services.Status) bool { return st.Ready }); err != nil {
		return // stopping, or a pack without dockerd
	}
	in.mu.Lock()
	in.engineWasUp = true
	in.mu.Unlock()
	in.tell(wire.Message{Kind: wire.EngineReady}) // unreported only if ddinit run is gone
	in.trustOnce()
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

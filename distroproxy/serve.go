package distroproxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/engineclient"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
)

// Options are what `ddinit proxy` serves a distro with.
type Options struct {
	Distro string // the WSL distro's name (ValidDistro)
	Shared string // the tmpfs every distro shares
	Socket string // the distro's docker socket to serve
	Engine string // the engine's socket for the distros' proxies (root's)
	Grace  time.Duration
	// Tools, when set, links the CLI tools offered in the shared tmpfs
	// into the distro, and keeps them linked while it serves.
	Tools *clitools.Linker
	Log   logrus.FieldLogger
}

// Serve is a distro's proxy, until ctx ends: the bind service (first:
// ddinit may ask for a \\wsl$ path at once), the binds following the
// engine's containers, and the distro's docker socket (root and the
// docker group, 0660, as Docker Engine on Linux) served by the docker API
// proxy with the distro's paths bound for the engine, and the CLI tools'
// links kept (o.Tools). It returns once all of it has stopped.
func Serve(ctx context.Context, o Options) error {
	if err := ValidDistro(o.Distro); err != nil {
		return err
	}
	dial := func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, o.Engine) }
	binds := &Binds{Distro: o.Distro, Shared: o.Shared, Log: o.Log, Grace: o.Grace}
	follower := &Follower{Binds: binds, Log: o.Log, Engine: engineclient.New(dial)}
	release, err := binds.Claim()
	if err != nil {
		return err
	}
	defer release()
	svc, err := transport.ListenOwned(transport.Addr{Scheme: "unix", Path: ServiceSocket(o.Shared, o.Distro)}, 0o600, 0)
	if err != nil {
		return fmt.Errorf("the bind service: %w", err)
	}
	// The binds the distro's containers need are made again before its
	// socket is served: a start that came first would find empty
	// folders. An engine not up yet is followed (and recovered) later.
	first, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := follower.Recover(first); err != nil {
		o.Log.WithError(err).Debug("the engine is not answering yet: its containers' binds are made when it does")
	}
	cancel()
	gid := transport.DockerGroup()
	l, err := transport.ListenOwned(transport.Addr{Scheme: "unix", Path: o.Socket}, 0o660, gid)
	if err != nil {
		svc.Close()
		return fmt.Errorf("serve %s: %w", o.Socket, err)
	}
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	run(func() { binds.ServeBinds(svc) })
	if o.Tools != nil {
		run(func() { o.Tools.Keep(ctx) })
	}
	// The binds of existing containers are made again whenever the
	// engine answers: now, or once ddinit is up.
	run(func() { follower.Follow(ctx) })
	run(func() {
		<-ctx.Done()
		l.Close()
		svc.Close()
	})
	o.Log.WithFields(logrus.Fields{"socket": o.Socket, "engine": o.Engine, "group": gid}).Info("serving the distro's docker socket")
	// Its clients' markers are stripped (only ddinit's own requests, the
	// follower's, may say they are internal); every request it passes on
	// says which distro it comes from, so that ddinit shares its budgets
	// by distro.
	p := &dockerproxy.Proxy{Dial: dial, Translate: binds.Translate, Label: LabelBinds, Identity: "distro/" + o.Distro, Log: o.Log}
	p.Serve(l)
	wg.Wait()
	return nil
}

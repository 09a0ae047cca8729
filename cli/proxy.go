package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/dockerproxy"
	initd "github.com/ddinit/ddinit/init"
	"github.com/ddinit/ddinit/logs"
	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
)

// runProxy is `ddinit proxy --distro NAME`, which the frontend runs as
// root in each integrated distro: the distro's docker socket, served by
// the docker API proxy with the distro's paths bound for the engine.
func runProxy(env *Env, args []string) error {
	fs := newFlags(env, "proxy", "proxy --distro NAME [--socket PATH] [--wsl-shared DIR] [--engine ADDR]")
	distro := fs.String("distro", os.Getenv("WSL_DISTRO_NAME"), "this WSL distro's name (default $WSL_DISTRO_NAME)")
	socket := fs.String("socket", "/var/run/docker.sock", "the docker socket to serve in this distro")
	shared := fs.String("wsl-shared", initd.DefaultWSLShared, "the tmpfs all distros share")
	engine := fs.String("engine", "", "the engine's shared socket (default <wsl-shared>/"+initd.SharedSocketsDir+"/docker.sock)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	grace := fs.Duration("bind-grace", distroproxy.SweepGrace, "how long a bind is kept for a create that has not named its container yet")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *distro == "" {
		return usagef("--distro: the WSL distro's name is needed (WSL sets $WSL_DISTRO_NAME)")
	}
	if err := distroproxy.ValidDistro(*distro); err != nil {
		return usagef("--distro: %v", err)
	}
	if *engine == "" {
		*engine = filepath.Join(*shared, initd.SharedSocketsDir, "docker.sock")
	}
	lvl, err := logrus.ParseLevel(*level)
	if err != nil {
		return usagef("--log-level: %v", err)
	}
	log := logs.New("proxy", env.Stderr, nil, lvl).WithField("distro", *distro)
	dialEngine := func(ctx context.Context) (net.Conn, error) { return vsock.DialUnix(ctx, *engine) }
	binds := &distroproxy.Binds{Distro: *distro, Shared: *shared, Log: log, Grace: *grace}
	follower := &distroproxy.Follower{Binds: binds, Log: log, Engine: dockerproxy.NewEngine(dialEngine)}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	// The bind service first: ddinit may ask for a \\wsl$ path at once.
	svc, err := vsock.ListenOwned(vsock.Addr{Scheme: "unix", Path: distroproxy.ServiceSocket(*shared, *distro)}, 0o600, 0)
	if err != nil {
		return fmt.Errorf("the bind service: %w", err)
	}
	defer svc.Close()
	go binds.ServeBinds(svc)
	// Follow makes the existing containers' binds again whenever the
	// engine answers: now, or once ddinit is up.
	go follower.Follow(ctx)
	// root and the distro's docker group, 0660, as Docker Engine on Linux.
	gid := vsock.DockerGroup()
	l, err := vsock.ListenOwned(vsock.Addr{Scheme: "unix", Path: *socket}, 0o660, gid)
	if err != nil {
		return fmt.Errorf("serve %s: %w", *socket, err)
	}
	p := &dockerproxy.Proxy{Dial: dialEngine, Translate: binds.Translate, Label: distroproxy.LabelBinds, Log: log}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	log.WithFields(logrus.Fields{"socket": *socket, "engine": *engine, "group": gid}).Info("serving the distro's docker socket")
	p.Serve(l)
	return nil
}

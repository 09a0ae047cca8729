package cli

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
)

// runProxy is `ddinit proxy --distro NAME`, which the frontend runs as
// root in each integrated distro: the distro's docker socket, served by
// the docker API proxy with the distro's paths bound for the engine.
func runProxy(env *Env, fs *flags) func() error {
	distro := fs.String("distro", os.Getenv("WSL_DISTRO_NAME"), "this WSL distro's name (default $WSL_DISTRO_NAME)")
	socket := fs.String("socket", "/var/run/docker.sock", "the docker socket to serve in this distro")
	shared := fs.String("wsl-shared", config.DefaultWSLShared, "the tmpfs all distros share")
	engine := fs.String("engine", "", "the engine's socket for the distros' proxies (default <wsl-shared>/"+config.SharedSocketsDir+"/"+config.ProxiesSocket+")")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	grace := fs.Duration("bind-grace", distroproxy.SweepGrace, "how long a bind is kept for a create that has not named its container yet")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return proxy(env, *distro, *socket, *shared, *engine, *level, *grace)
	}
}

func proxy(env *Env, distro, socket, shared, engine, level string, grace time.Duration) error {
	if distro == "" {
		return usagef("--distro: the WSL distro's name is needed (WSL sets $WSL_DISTRO_NAME)")
	}
	if err := distroproxy.ValidDistro(distro); err != nil {
		return usagef("--distro: %v", err)
	}
	if engine == "" {
		engine = filepath.Join(shared, config.SharedSocketsDir, config.ProxiesSocket)
	}
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return usagef("--log-level: %v", err)
	}
	log := logs.New("proxy", env.Stderr, nil, lvl).WithField("distro", distro)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	return distroproxy.Serve(ctx, distroproxy.Options{Distro: distro, Shared: shared, Socket: socket, Engine: engine, Grace: grace, Log: log})
}

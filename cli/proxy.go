package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/distroproxy"
	"github.com/ddinit/ddinit/logs"
	"github.com/sirupsen/logrus"
)

// runProxy is `ddinit proxy --distro NAME`, which the frontend runs as
// root in each integrated distro: the distro's docker socket, served by
// the docker API proxy with the distro's paths bound for the engine, the
// CLI tools ddinit offers linked into the distro, and, while Kubernetes
// runs, its docker-desktop context merged into the default user's
// kubeconfig.
func runProxy(env *Env, fs *flags) func() error {
	distro := fs.String("distro", os.Getenv("WSL_DISTRO_NAME"), "this WSL distro's name (default $WSL_DISTRO_NAME)")
	socket := fs.String("socket", "/var/run/docker.sock", "the docker socket to serve in this distro")
	shared := fs.String("wsl-shared", config.DefaultWSLShared, "the tmpfs all distros share")
	engine := fs.String("engine", "", "the engine's socket for the distros' proxies (default <wsl-shared>/"+config.SharedSocketsDir+"/"+config.ProxiesSocket+")")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	grace := fs.Duration("bind-grace", distroproxy.SweepGrace, "how long a bind is kept for a create that has not named its container yet")
	tools := fs.Bool("cli-tools", true, "link the docker CLI, compose, buildx and kubectl ddinit offers into this distro (never over the distro's own)")
	kube := fs.Bool("kube-context", true, "while Kubernetes runs, merge its docker-desktop context into the distro's default user's ~/.kube/config (nothing else in it changes)")
	uninstall := fs.Bool("uninstall", false, "remove the CLI tools' links and the docker-desktop context ddinit merged from this distro and exit (integration turned off)")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return proxy(env, proxyArgs{*distro, *socket, *shared, *engine, *level, *grace, *tools, *kube, *uninstall})
	}
}

type proxyArgs struct {
	distro, socket, shared, engine, level string
	grace                                 time.Duration
	tools, kube, uninstall                bool
}

func proxy(env *Env, a proxyArgs) error {
	distro, socket, shared, engine, level, grace := a.distro, a.socket, a.shared, a.engine, a.level, a.grace
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
	linker := &clitools.Linker{Root: "/", Shared: shared, Folder: config.SharedCLITools, States: config.SharedDistroStates, Distro: distro, Version: config.Version, Log: log.WithField("component", "cli-tools"),
		Kubeconfig: config.SharedKubeconfig}
	if a.uninstall {
		// Not under a running proxy, which would link them again.
		release, err := (&distroproxy.Binds{Distro: distro, Shared: shared, Log: log}).Claim()
		if err != nil {
			return err
		}
		defer release()
		if err := linker.Uninstall(); err != nil {
			return fmt.Errorf("remove the CLI tools' links: %w", err)
		}
		log.Info("the CLI tools' links are removed from the distro")
		return nil
	}
	linker.NoLinks = !a.tools
	if !a.kube {
		linker.Kubeconfig = ""
	}
	if !a.tools && !a.kube {
		linker = nil
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	return distroproxy.Serve(ctx, distroproxy.Options{Distro: distro, Shared: shared, Socket: socket, Engine: engine, Grace: grace, Tools: linker, Log: log})
}

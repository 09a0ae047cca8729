package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"

	initd "github.com/ddinit/ddinit/init"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func runRun(env *Env, args []string) error {
	fs := newFlags(env, "run", "run [flags]")
	configPath := fs.String("config", "", "JSON config file; flags given on the command line override it")
	var flagCfg initd.Config
	fs.StringVar(&flagCfg.BaseImage, "base-image", "", "the base distro image (default "+initd.DefaultBaseImage+")")
	fs.StringVar(&flagCfg.BaseDigest, "base-digest", "", "sha256 the base image must have (default: its .sha256 sidecar)")
	fs.StringVar(&flagCfg.VersionPack, "version-pack", "", "the engine version pack image (default "+initd.DefaultVersionPack+")")
	fs.StringVar(&flagCfg.PackDigest, "version-pack-digest", "", "sha256 the version pack must have (default: its .sha256 sidecar)")
	fs.StringVar(&flagCfg.DataDir, "data-dir", "", "the data distro's root (default "+initd.DefaultDataDir+")")
	fs.StringVar(&flagCfg.RunDir, "run-dir", "", "private directory for mounts and sockets (default "+initd.DefaultRunDir+")")
	fs.StringVar(&flagCfg.ImageMode, "image-mode", "", "auto, kernel (loop-mount with iso9660) or userspace (extract)")
	fs.StringVar(&flagCfg.Hostname, "hostname", "", "host name inside the namespace (default "+initd.DefaultHostname+")")
	fs.BoolVar(&flagCfg.Kubernetes, "kubernetes", false, "run kubelet when the version pack has it")
	fs.StringVar(&flagCfg.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&flagCfg.AutomountRoot, "automount-root", "", "where WSL mounts the Windows drives (default "+initd.DefaultAutomount+")")
	fs.StringVar(&flagCfg.WSLShared, "wsl-shared", "", "the tmpfs all distros share, where the docker socket is published (default "+initd.DefaultWSLShared+")")
	fs.StringVar(&flagCfg.Subnet, "subnet", "", "the link between the distro and the namespace, a /30 (default 100.64.249.0/30)")
	fs.StringVar(&flagCfg.Subnet6, "subnet6", "", "the link's IPv6 prefix, used when the distro has IPv6 (default fd64:100:249::/64; off to leave IPv6 out)")
	fs.StringVar(&flagCfg.ResolvConf, "resolv-conf", "", "the distro's resolver configuration, copied inside (default /etc/resolv.conf)")
	fs.BoolVar(&flagCfg.VsockAllowLocal, "vsock-allow-local", false, "admit vsock peers from CID 1 (tests only; the default admits the host, CID 2)")
	var control, expose listFlag
	fs.Var(&control, "control", "control API address (repeatable)")
	fs.Var(&expose, "expose", "NAME=ADDR: expose a service's socket, e.g. docker=unix:///run/ddinit/docker.sock (repeatable)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("run takes no arguments (got %q)", fs.Args())
	}
	var cfg initd.Config
	if *configPath != "" {
		c, err := initd.LoadConfigFile(*configPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	// Flags given explicitly win over the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "base-image":
			cfg.BaseImage = flagCfg.BaseImage
		case "base-digest":
			cfg.BaseDigest = flagCfg.BaseDigest
		case "version-pack":
			cfg.VersionPack = flagCfg.VersionPack
		case "version-pack-digest":
			cfg.PackDigest = flagCfg.PackDigest
		case "data-dir":
			cfg.DataDir = flagCfg.DataDir
		case "run-dir":
			cfg.RunDir = flagCfg.RunDir
		case "image-mode":
			cfg.ImageMode = flagCfg.ImageMode
		case "hostname":
			cfg.Hostname = flagCfg.Hostname
		case "kubernetes":
			cfg.Kubernetes = flagCfg.Kubernetes
		case "log-level":
			cfg.LogLevel = flagCfg.LogLevel
		case "automount-root":
			cfg.AutomountRoot = flagCfg.AutomountRoot
		case "wsl-shared":
			cfg.WSLShared = flagCfg.WSLShared
		case "subnet":
			cfg.Subnet = flagCfg.Subnet
		case "subnet6":
			cfg.Subnet6 = flagCfg.Subnet6
		case "resolv-conf":
			cfg.ResolvConf = flagCfg.ResolvConf
		case "vsock-allow-local":
			cfg.VsockAllowLocal = flagCfg.VsockAllowLocal
		case "control":
			cfg.Control = control
		}
	})
	exposeFromFlags := map[string]bool{}
	for _, e := range expose {
		name, addr, ok := strings.Cut(e, "=")
		if !ok {
			return usagef("--expose %q: want NAME=ADDR", e)
		}
		if cfg.Expose == nil {
			cfg.Expose = map[string]initd.Addrs{}
		}
		if !exposeFromFlags[name] {
			cfg.Expose[name] = nil // flags replace the file's addresses for a name
			exposeFromFlags[name] = true
		}
		cfg.Expose[name] = append(cfg.Expose[name], addr)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("ddinit run needs root (namespaces, mounts)")
	}
	if code := initd.Outer(cfg, env.Stderr); code != 0 {
		return exitCode(code)
	}
	return nil
}

func runInit(env *Env, args []string) error {
	if code := initd.Inner(env.Stderr); code != 0 {
		return exitCode(code)
	}
	return nil
}

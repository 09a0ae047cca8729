package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/launcher"
	"github.com/ddinit/ddinit/pid1"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// runFlag binds one `ddinit run` flag to its config field: a flag given
// on the command line overrides the config file's value.
type runFlag struct {
	name, usage string
	str         func(*config.Config) *string
	boolean     func(*config.Config) *bool
	duration    func(*config.Config) *config.Duration
}

var runFlags = []runFlag{
	{name: "base-image", usage: "the base distro image (default " + config.DefaultBaseImage + ")", str: func(c *config.Config) *string { return &c.BaseImage }},
	{name: "base-digest", usage: "sha256 the base image must have (default: its .sha256 sidecar)", str: func(c *config.Config) *string { return &c.BaseDigest }},
	{name: "version-pack", usage: "the engine version pack image (default " + config.DefaultVersionPack + ")", str: func(c *config.Config) *string { return &c.VersionPack }},
	{name: "version-pack-digest", usage: "sha256 the version pack must have (default: its .sha256 sidecar)", str: func(c *config.Config) *string { return &c.PackDigest }},
	{name: "cli-tools", usage: "the image of the docker CLI and its plugins offered to every distro, or none (default " + config.DefaultCLITools + ")", str: func(c *config.Config) *string { return &c.CLITools }},
	{name: "cli-tools-digest", usage: "sha256 the CLI tools image must have (default: its .sha256 sidecar)", str: func(c *config.Config) *string { return &c.CLIToolsDigest }},
	{name: "kubernetes-image", usage: "the image of the Kubernetes cluster's components, or none (default " + config.DefaultKubernetes + ")", str: func(c *config.Config) *string { return &c.KubernetesImage }},
	{name: "kubernetes-image-digest", usage: "sha256 the Kubernetes image must have (default: its .sha256 sidecar)", str: func(c *config.Config) *string { return &c.KubernetesImageDigest }},
	{name: "data-dir", usage: "the data distro's root (default " + config.DefaultDataDir + ")", str: func(c *config.Config) *string { return &c.DataDir }},
	{name: "run-dir", usage: "private directory for mounts and sockets (default " + config.DefaultRunDir + ")", str: func(c *config.Config) *string { return &c.RunDir }},
	{name: "image-mode", usage: "auto, kernel (loop-mount with iso9660) or userspace (extract)", str: func(c *config.Config) *string { return &c.ImageMode }},
	{name: "service-runtime", usage: "the OCI runtime of ddinit's own tasks (dockerd, Kubernetes): auto (crun when the version pack has it), runc or crun", str: func(c *config.Config) *string { return &c.ServiceRuntime }},
	{name: "hostname", usage: "host name inside the namespace (default " + config.DefaultHostname + ")", str: func(c *config.Config) *string { return &c.Hostname }},
	{name: "kubernetes", usage: "run kubelet when the version pack has it", boolean: func(c *config.Config) *bool { return &c.Kubernetes }},
	{name: "log-level", usage: "debug, info, warn or error (default info)", str: func(c *config.Config) *string { return &c.LogLevel }},
	{name: "automount-root", usage: "where WSL mounts the Windows drives (default " + config.DefaultAutomount + ")", str: func(c *config.Config) *string { return &c.AutomountRoot }},
	{name: "wsl-shared", usage: "the tmpfs all distros share, where the docker socket is published (default " + config.DefaultWSLShared + ")", str: func(c *config.Config) *string { return &c.WSLShared }},
	{name: "wsl-lib", usage: "WSL's GPU libraries, bound read-only at /usr/lib/wsl inside when present (default " + config.DefaultWSLLib + ")", str: func(c *config.Config) *string { return &c.WSLLib }},
	{name: "subnet", usage: "the link between the distro and the namespace, a /30 (default 100.64.249.0/30)", str: func(c *config.Config) *string { return &c.Subnet }},
	{name: "subnet6", usage: "the link's IPv6 prefix, used when the distro has IPv6 (default fd64:100:249::/64; off to leave IPv6 out)", str: func(c *config.Config) *string { return &c.Subnet6 }},
	{name: "resolv-conf", usage: "the distro's resolver file, whose nameservers containers' DNS asks, followed as it changes (default /etc/resolv.conf)", str: func(c *config.Config) *string { return &c.ResolvConf }},
	{name: "idle-stop", usage: "stop dockerd and containerd after this long unused (no container running, no client connected), e.g. 5m; the next client wakes them (default: never)", duration: func(c *config.Config) *config.Duration { return &c.IdleStop }},
	{name: "idle-pause", usage: "freeze the engine's cgroup after this long unused (before --idle-stop), e.g. 30s; a wake is then a thaw (default: never)", duration: func(c *config.Config) *config.Duration { return &c.IdlePause }},
	{name: "vsock-allow-local", usage: "admit vsock peers from CID 1 (tests only; the default admits the host, CID 2)", boolean: func(c *config.Config) *bool { return &c.VsockAllowLocal }},
}

func runRun(env *Env, fs *flags) func() error {
	configPath := fs.String("config", "", "JSON config file; flags given on the command line override it")
	var flagCfg config.Config
	for _, f := range runFlags {
		switch {
		case f.str != nil:
			fs.StringVar(f.str(&flagCfg), f.name, "", f.usage)
		case f.duration != nil:
			d := f.duration(&flagCfg)
			fs.Func(f.name, f.usage, func(v string) error {
				parsed, err := time.ParseDuration(v)
				*d = config.Duration(parsed)
				return err
			})
		default:
			fs.BoolVar(f.boolean(&flagCfg), f.name, false, f.usage)
		}
	}
	var control, expose listFlag
	fs.Var(&control, "control", "control API address (repeatable)")
	fs.Var(&expose, "expose", "NAME=ADDR: expose a service's socket, e.g. docker=unix:///run/ddinit/docker.sock (repeatable)")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return boot(env, fs, *configPath, flagCfg, control, expose)
	}
}

func boot(env *Env, fs *flags, configPath string, flagCfg config.Config, control, expose listFlag) error {
	var cfg config.Config
	if configPath != "" {
		c, err := config.LoadConfigFile(configPath)
		if err != nil {
			return err
		}
		cfg = c
	}
	// Flags given explicitly win over the file.
	fs.Visit(func(given *flag.Flag) {
		if given.Name == "control" {
			cfg.Control = control
		}
		for _, f := range runFlags {
			switch {
			case f.name != given.Name:
			case f.str != nil:
				*f.str(&cfg) = *f.str(&flagCfg)
			case f.duration != nil:
				*f.duration(&cfg) = *f.duration(&flagCfg)
			default:
				*f.boolean(&cfg) = *f.boolean(&flagCfg)
			}
		}
	})
	exposeFromFlags := map[string]bool{}
	for _, e := range expose {
		name, addr, ok := strings.Cut(e, "=")
		if !ok {
			return usagef("--expose %q: want NAME=ADDR", e)
		}
		if cfg.Expose == nil {
			cfg.Expose = map[string]config.Addrs{}
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
	code, err := launcher.Run(cfg, env.Stderr)
	if err != nil {
		return fmt.Errorf("boot failed: %w", err)
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

func runInit(env *Env, args []string) error {
	if code := pid1.Main(env.Stderr); code != 0 {
		return exitCode(code)
	}
	return nil
}

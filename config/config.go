package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/transport"
)

// Docker Desktop's install paths, as WSL shows them with automount root
// /mnt/host.
const (
	DefaultBaseImage   = "/mnt/host/c/Program Files/Docker/Docker/resources/docker-desktop.iso"
	DefaultVersionPack = "/mnt/host/c/Program Files/Docker/Docker/resources/docker.iso"
	DefaultCLITools    = "/mnt/host/c/Program Files/Docker/Docker/resources/cli-tools.iso"
	DefaultKubernetes  = "/mnt/host/c/Program Files/Docker/Docker/resources/kubernetes.iso"
	DefaultDataDir     = "/mnt/wsl/docker-desktop-data/data"
	DefaultRunDir      = "/run/ddinit"
	DefaultHostname    = "docker-desktop"
	DefaultAutomount   = "/mnt/host"
	DefaultWSLShared   = "/mnt/wsl"
	DefaultWSLLib      = "/usr/lib/wsl"
)

// Where, under the tmpfs every distro shares (WSLShared), ddinit run
// publishes what the distros use: the docker sockets (SharedSocketsDir:
// docker.sock for WSL integration, ProxiesSocket, root's only, for the
// distros' `ddinit proxy`), its own static binary (SharedBinary), the
// CLI tools (SharedCLITools) and, while Kubernetes runs, the cluster's
// admin kubeconfig (SharedKubeconfig: root:docker 0640, whose
// docker-desktop context each distro's proxy merges into its default
// user's ~/.kube/config); and where each distro's proxy says what it
// did there (SharedDistroStates).
const (
	SharedSocketsDir   = "docker-desktop/shared-sockets"
	ProxiesSocket      = "proxies.sock"
	SharedBinary       = "docker-desktop/ddinit"
	SharedCLITools     = "docker-desktop/cli-tools"
	SharedKubeconfig   = "docker-desktop/kubernetes/config"
	SharedDistroStates = "docker-desktop/distros"
)

// Version is ddinit's version; builds may set it with -ldflags -X.
var Version = "0.3.0-dev"

// Duration is a time.Duration written as "100ms" in JSON.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"100ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// RestartPolicy is the services' restart backoff in the config file.
type RestartPolicy struct {
	Initial    Duration `json:"initial,omitempty"`
	Max        Duration `json:"max,omitempty"`
	ResetAfter Duration `json:"resetAfter,omitempty"`
	CrashLoop  int      `json:"crashLoop,omitempty"`
}

// LivenessConfig is the liveness timing in the config file: containerd's,
// and the default of every service's probe.
type LivenessConfig struct {
	Period    Duration `json:"period,omitempty"`
	Timeout   Duration `json:"timeout,omitempty"`
	KillAfter Duration `json:"killAfter,omitempty"`
}

// Config is everything `ddinit run` is told, from flags or --config: the
// user's choices only (what ddinit run decides for each boot of PID 1
// travels beside it, in package wire's Handoff).
type Config struct {
	BaseImage   string `json:"baseImage,omitempty"`
	BaseDigest  string `json:"baseDigest,omitempty"`
	VersionPack string `json:"versionPack,omitempty"`
	PackDigest  string `json:"versionPackDigest,omitempty"`
	// CLITools is the image of the docker CLI and its plugins offered to
	// every distro ("none": offer none).
	CLITools       string `json:"cliTools,omitempty"`
	CLIToolsDigest string `json:"cliToolsDigest,omitempty"`
	// KubernetesImage is the image of the cluster's components, unpacked
	// the first time the kubernetes setting is on ("none": no cluster).
	KubernetesImage       string           `json:"kubernetesImage,omitempty"`
	KubernetesImageDigest string           `json:"kubernetesImageDigest,omitempty"`
	DataDir               string           `json:"dataDir,omitempty"`
	RunDir                string           `json:"runDir,omitempty"`
	Control               []string         `json:"control,omitempty"`
	Expose                map[string]Addrs `json:"expose,omitempty"`
	ImageMode             string           `json:"imageMode,omitempty"`
	// ServiceRuntime is the OCI runtime of ddinit's own tasks (dockerd,
	// the Kubernetes services): auto (crun when the version pack has it,
	// else runc), runc or crun. Users' containers keep dockerd's default.
	ServiceRuntime string         `json:"serviceRuntime,omitempty"`
	Hostname       string         `json:"hostname,omitempty"`
	Kubernetes     bool           `json:"kubernetes,omitempty"`
	Restart        RestartPolicy  `json:"restart,omitzero"`
	Liveness       LivenessConfig `json:"liveness,omitzero"`
	// SettingsDeadline is how long dockerd gets to be ready on a changed
	// daemon.json before the change is rolled back (default 60s).
	SettingsDeadline Duration `json:"settingsDeadline,omitempty"`
	// IdleStop is how long the engine may go unused (no container running,
	// no client connected) before dockerd and containerd are stopped; the
	// next client wakes them. Zero: never. The settings' idleStop wins.
	IdleStop Duration `json:"idleStop,omitempty"`
	// IdlePause is how long the engine may go unused before its cgroup is
	// frozen (a wake is then a thaw); before IdleStop. Zero: never.
	IdlePause Duration `json:"idlePause,omitempty"`
	LogLevel  string   `json:"logLevel,omitempty"`
	// VsockAllowLocal admits vsock peers from CID 1 (this machine), for
	// tests whose frontend stand-in runs inside the VM; the default admits
	// only the host, CID 2.
	VsockAllowLocal bool `json:"vsockAllowLocal,omitempty"`
	// AutomountRoot is where WSL mounts the Windows drives (wsl.conf
	// [automount] root).
	AutomountRoot string `json:"automountRoot,omitempty"`
	// WSLLib is where WSL puts its GPU user-space libraries; bound
	// read-only at /usr/lib/wsl inside when it exists.
	WSLLib string `json:"wslLib,omitempty"`
	// WSLShared is the tmpfs every distro shares; the docker socket is
	// published under it for WSL integration.
	WSLShared string `json:"wslShared,omitempty"`
	// Subnet is the veth link's; .1 is the distro's end, .2 the namespace's.
	Subnet string `json:"subnet,omitempty"`
	// Subnet6 is the link's IPv6 prefix (::1 the distro's end, ::2 the
	// namespace's), used when the distro has IPv6; "off" leaves IPv6 out.
	Subnet6 string `json:"subnet6,omitempty"`
	// ResolvConf is the distro's resolver file (WSL writes it): the
	// nameservers ddinit's DNS forwarder asks, followed as it changes.
	ResolvConf string `json:"resolvConf,omitempty"`
}

// Addrs is one address or a list of them ("unix:///…" or ["unix:///…", "vsock://:61001"]).
type Addrs []string

// UnmarshalJSON implements json.Unmarshaler.
func (a *Addrs) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = Addrs{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("an address or a list of addresses: %w", err)
	}
	*a = many
	return nil
}

// Defaults fills what is unset.
func (c *Config) Defaults() {
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&c.BaseImage, DefaultBaseImage)
	set(&c.VersionPack, DefaultVersionPack)
	set(&c.CLITools, DefaultCLITools)
	set(&c.KubernetesImage, DefaultKubernetes)
	set(&c.DataDir, DefaultDataDir)
	set(&c.RunDir, DefaultRunDir)
	set(&c.ImageMode, string(rootfs.ModeAuto))
	set(&c.ServiceRuntime, "auto")
	set(&c.Hostname, DefaultHostname)
	set(&c.LogLevel, "info")
	set(&c.AutomountRoot, DefaultAutomount)
	set(&c.WSLShared, DefaultWSLShared)
	set(&c.WSLLib, DefaultWSLLib)
	set(&c.Subnet, network.DefaultSubnet)
	set(&c.Subnet6, network.DefaultSubnet6)
	set(&c.ResolvConf, "/etc/resolv.conf")
	if len(c.Control) == 0 {
		c.Control = []string{"unix://" + filepath.Join(c.RunDir, "control.sock")}
	}
}

// Validate refuses a config that cannot boot, naming the field.
func (c *Config) Validate() error {
	for _, a := range c.Control {
		if _, err := transport.Parse(a); err != nil {
			return fmt.Errorf("control: %w", err)
		}
	}
	for name, addrs := range c.Expose {
		if name == "" {
			return fmt.Errorf("expose: empty name (want NAME=ADDR)")
		}
		for _, a := range addrs {
			if _, err := transport.Parse(a); err != nil {
				return fmt.Errorf("expose %s: %w", name, err)
			}
		}
	}
	switch rootfs.Mode(c.ImageMode) {
	case rootfs.ModeAuto, rootfs.ModeKernel, rootfs.ModeUserspace:
	default:
		return fmt.Errorf("imageMode %q: want auto, kernel or userspace", c.ImageMode)
	}
	switch c.ServiceRuntime {
	case "auto", "runc", "crun":
	default:
		return fmt.Errorf("serviceRuntime %q: want auto, runc or crun", c.ServiceRuntime)
	}
	if _, _, err := network.Addrs(c.Subnet); err != nil {
		return err
	}
	if c.Subnet6 != "off" {
		if _, _, err := network.Addrs6(c.Subnet6); err != nil {
			return err
		}
	}
	if strings.ContainsAny(c.Hostname, "/ \t") || len(c.Hostname) > 64 {
		return fmt.Errorf("hostname %q is not a host name", c.Hostname)
	}
	return nil
}

// RestartPolicy turns the config's restart policy into the supervisor's.
func (c *Config) RestartPolicy() services.RestartPolicy {
	p := services.DefaultRestartPolicy
	if c.Restart.Initial > 0 {
		p.Initial = time.Duration(c.Restart.Initial)
	}
	if c.Restart.Max > 0 {
		p.Max = time.Duration(c.Restart.Max)
	}
	if c.Restart.ResetAfter > 0 {
		p.ResetAfter = time.Duration(c.Restart.ResetAfter)
	}
	if c.Restart.CrashLoop > 0 {
		p.CrashLoop = c.Restart.CrashLoop
	}
	return p
}

// LivenessTiming is the config's liveness timing; unset fields take the
// supervisor's defaults.
func (c *Config) LivenessTiming() services.LivenessTiming {
	return services.LivenessTiming{
		Period:    time.Duration(c.Liveness.Period),
		Timeout:   time.Duration(c.Liveness.Timeout),
		KillAfter: time.Duration(c.Liveness.KillAfter),
	}
}

// maxConfigBytes bounds what is read of a config file: a few dozen fields.
const maxConfigBytes = 1 << 20

// LoadConfigFile reads a JSON config; unknown fields are errors, so a typo
// is not silently ignored.
func LoadConfigFile(path string) (Config, error) {
	var c Config
	b, err := regularfile.Read(path, maxConfigBytes)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// SettingsDeadlineOr is how long dockerd gets to be ready on a changed
// daemon.json (or a new pack) before it is rolled back: a minute unless
// set.
func (c *Config) SettingsDeadlineOr() time.Duration {
	if c.SettingsDeadline > 0 {
		return time.Duration(c.SettingsDeadline)
	}
	return time.Minute
}

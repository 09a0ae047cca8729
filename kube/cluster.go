package kube

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/kubepki"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/services"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The cluster's fixed addresses, as Docker Desktop's: the service range,
// the kube-dns Service's address in it, and the pods' range.
const (
	ServiceRange = "10.96.0.0/12"
	DNSServiceIP = "10.96.0.10"
	PodRange     = "10.1.0.0/16"
	// APIPort is the API server's port, on every address of the node.
	APIPort = 6443
	// NodeName is the node's name, and the kubeconfigs' context's.
	NodeName = "docker-desktop"
	// coreDNSPort is where CoreDNS answers, on the node's address: port 53
	// there is ddinit's own DNS forwarder (the namespace's resolver).
	coreDNSPort = 1053
)

// Setting is the setting that switches the cluster on.
const Setting = "kubernetes"

// ociVersion is the runtime-spec version the components' specs are
// written in: the packs' dockerd definition's, which both runtimes of
// the packs read. crun 1.8 refuses 1.2.0, the Go module's specs.Version
// ("unknown version specified"); the specs use nothing added since.
const ociVersion = "1.0.2"

// Names of the cluster's services, in start order.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Kubelet           = "kubelet"
	Proxy             = "kube-proxy"
	CoreDNS           = "coredns"
)

// Components are the services the cluster runs.
var Components = []string{Etcd, APIServer, ControllerManager, Scheduler, Kubelet, Proxy, CoreDNS}

// Manifest is the Kubernetes image's /kubernetes.json.
type Manifest struct {
	Name       string `json:"name"`
	PauseImage string `json:"pauseImage"`
	Components []struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Source  string `json:"source"`
	} `json:"components"`
}

// Version is the version the manifest gives a component ("" if none).
func (m Manifest) Version(name string) string {
	for _, c := range m.Components {
		if c.Name == name {
			return c.Version
		}
	}
	return ""
}

// Cluster is where the cluster's parts are, as PID 1's namespace sees
// them.
type Cluster struct {
	// Tree is the Kubernetes image's tree (usr/bin/kube, usr/lib/cni,
	// images/pause.tar, kubernetes.json).
	Tree string
	// Dir is the cluster's state in the data store: pki, etcd, config.
	Dir string
	// RunDir is for what each start writes again (the CNI network).
	RunDir string
	// NodeIP is the node's address: PID 1's end of the link to the
	// distro, where the distro reaches the API server and NodePorts.
	NodeIP net.IP
	// CgroupV1: the machine mounts cgroup v1 (kubelet 1.35 and later
	// refuse it unless told).
	CgroupV1 bool
	// Containerd is containerd's socket.
	Containerd string
	// RestrictOOMScoreAdj: root lacks CAP_SYS_RESOURCE (services.CRI).
	RestrictOOMScoreAdj bool

	Manifest Manifest
}

// maxManifest bounds what is read of the image's manifest.
const maxManifest = 1 << 20

// ReadManifest reads and checks the image's manifest: the image must
// carry the kube program, the CNI plugins and the pause image it names.
func ReadManifest(tree string) (Manifest, error) {
	var m Manifest
	b, err := regularfile.Read(filepath.Join(tree, "kubernetes.json"), maxManifest)
	if err != nil {
		return m, fmt.Errorf("the Kubernetes image has no manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("the Kubernetes image's manifest is not valid JSON: %w", err)
	}
	if m.PauseImage == "" || strings.ContainsAny(m.PauseImage, " \n\"'\\") {
		return m, fmt.Errorf("the Kubernetes image's manifest names no usable pause image (%q)", m.PauseImage)
	}
	for _, f := range []string{"usr/bin/kube", "images/pause.tar", "usr/lib/cni/bridge", "usr/lib/cni/host-local", "usr/lib/cni/portmap", "usr/lib/cni/loopback"} {
		st, err := os.Stat(filepath.Join(tree, f))
		if err != nil || !st.Mode().IsRegular() {
			return m, fmt.Errorf("the Kubernetes image lacks %s", f)
		}
	}
	return m, nil
}

// Paths of the cluster's files.
func (c *Cluster) pkiDir() string            { return filepath.Join(c.Dir, "pki") }
func (c *Cluster) configDir() string         { return filepath.Join(c.Dir, "config") }
func (c *Cluster) etcdDir() string           { return filepath.Join(c.Dir, "etcd") }
func (c *Cluster) config(name string) string { return filepath.Join(c.configDir(), name) }
func (c *Cluster) cniConfDir() string        { return filepath.Join(c.RunDir, "net.d") }
func (c *Cluster) kube() string              { return filepath.Join(c.Tree, "usr/bin/kube") }

// AdminKubeconfig is the admin kubeconfig (server https://127.0.0.1:6443,
// which works in the namespace and, published, in the distros).
func (c *Cluster) AdminKubeconfig() string { return c.config("admin.conf") }

// Server is the API server's URL for every client: the loopback of
// whichever namespace the client is in (the distros' is published).
func Server() string { return fmt.Sprintf("https://127.0.0.1:%d", APIPort) }

// Prepare writes the cluster's files: the PKI (kept when valid), a
// kubeconfig per component, kubelet's configuration, the Corefile and
// the CNI network. It says what of the PKI it made again.
func (c *Cluster) Prepare() (*kubepki.PKI, kubepki.Report, error) {
	_, svcNet, _ := net.ParseCIDR(ServiceRange)
	first := append(net.IP(nil), svcNet.IP.To4()...)
	first[3]++
	pki, report, err := kubepki.Ensure(c.pkiDir(), kubepki.Options{NodeName: NodeName, NodeIPs: []net.IP{c.NodeIP}, ServiceIP: first})
	if err != nil {
		return nil, report, err
	}
	for _, d := range []string{c.configDir(), c.etcdDir(), c.cniConfDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, report, fmt.Errorf("kubernetes: %w", err)
		}
	}
	for file, user := range map[string]string{
		"admin.conf": "admin", "controller-manager.conf": "controller-manager", "scheduler.conf": "scheduler",
		"kubelet.conf": "kubelet", "kube-proxy.conf": "kube-proxy", "coredns.conf": "coredns",
	} {
		b, err := pki.Kubeconfig(Server(), user)
		if err != nil {
			return nil, report, err
		}
		if err := writeIfChanged(c.config(file), b, 0o600); err != nil {
			return nil, report, err
		}
	}
	files := map[string][]byte{
		c.config("kubelet.yaml"):                            c.kubeletConfig(pki),
		c.config("Corefile"):                                c.corefile(),
		filepath.Join(c.cniConfDir(), "10-ddinit.conflist"): cniConflist(),
	}
	for path, b := range files {
		if err := writeIfChanged(path, b, 0o600); err != nil {
			return nil, report, err
		}
	}
	return pki, report, nil
}

// writeIfChanged writes a file only when its content differs: most
// starts change nothing, and a kept file keeps its time.
func writeIfChanged(path string, b []byte, mode os.FileMode) error {
	if old, err := regularfile.Read(path, int64(len(b))+1); err == nil && string(old) == string(b) {
		return nil
	}
	if err := atomicfile.Write(path, b, mode); err != nil {
		return fmt.Errorf("kubernetes: %w", err)
	}
	return nil
}

// kubeletConfig is kubelet's KubeletConfiguration (JSON is YAML). What
// each line is for: docs/kubernetes.md.
func (c *Cluster) kubeletConfig(pki *kubepki.PKI) []byte {
	serving := pki.Of("kubelet-serving")
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"cgroupDriver":             "cgroupfs",
		"failCgroupV1":             !c.CgroupV1,
		"containerRuntimeEndpoint": "unix://" + c.Containerd,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": pki.CAFiles().Cert},
		},
		"authorization":     map[string]any{"mode": "Webhook"},
		"clusterDNS":        []string{DNSServiceIP},
		"clusterDomain":     "cluster.local",
		"failSwapOn":        false,
		"tlsCertFile":       serving.Cert,
		"tlsPrivateKeyFile": serving.Key,
		// Where the API server reaches it (logs, exec): the node's
		// address; its health only on the loopback.
		"address":            c.NodeIP.String(),
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        10248,
		"podLogsDir":         "/var/lib/kubelet/pod-logs",
		// The data store is the user's disk, shared with docker's images:
		// kubelet must not evict pods or delete images (one built with
		// docker has no registry to come back from) because docker filled
		// it; what it holds is the user's to prune.
		"evictionHard":                map[string]string{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"staticPodPath":               "",
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return append(b, '\n')
}

// corefile is CoreDNS's configuration: the cluster's names from the API
// server, the rest from the namespace's resolver (ddinit's forwarder,
// which resolves as the distro does).
func (c *Cluster) corefile() []byte {
	return []byte(fmt.Sprintf(`.:%d {
    bind %s
    errors
    health 127.0.0.1:8080
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    loop
    loadbalance
}
`, coreDNSPort, c.NodeIP, c.config("coredns.conf"), kubepki.Context))
}

// cniConflist is the pods' network: a bridge (the gateway, masquerading
// out, hairpin so a pod reaches itself through a Service), addresses from
// PodRange kept in the run folder (no pod outlives PID 1), port maps.
func cniConflist() []byte {
	return []byte(`{
  "cniVersion": "1.0.0",
  "name": "ddinit-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "` + PodRange + `"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/ddinit/kubernetes/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`)
}

// CRI is containerd's CRI configuration for the cluster.
func (c *Cluster) CRI() *services.CRI {
	return &services.CRI{
		SandboxImage:        c.Manifest.PauseImage,
		RuntimeBinary:       "runc",
		CNIBinDirs:          []string{filepath.Join(c.Tree, "usr/lib/cni")},
		CNIConfDir:          c.cniConfDir(),
		RestrictOOMScoreAdj: c.RestrictOOMScoreAdj,
	}
}

// liveTiming is how the components' liveness is probed: as kubeadm
// probes its static pods (every 10 s, 15 s to answer, killed after about
// 8 failures). The supervisor's default (2 s to answer, killed after
// 30 s) killed an API server that was only slow while the other
// components started beside it on a loaded machine; /status and `ddinit
// status` still show a component unresponsive from its first silence.
var liveTiming = services.LivenessTiming{Period: 10 * time.Second, Timeout: 15 * time.Second, KillAfter: 80 * time.Second}

// Definitions are the cluster's services, each started once what it
// depends on is ready, supervised as dockerd is (liveness, restart with
// backoff). None is required: a cluster that fails does not make the
// engine unhealthy; /status says which component fails and why.
func (c *Cluster) Definitions() []services.Definition {
	pki := &kubepki.PKI{Dir: c.pkiDir()}
	ca := pki.CAFiles()
	saKey, saPub := pki.ServiceAccountKeys()
	api, apiClient := pki.Of("apiserver"), pki.Of("apiserver-kubelet-client")
	node := c.NodeIP.String()
	def := func(name string, ready, live string, deps []string, args ...string) services.Definition {
		d := services.Definition{
			Name: name, Setting: Setting, Required: false, DependsOn: deps,
			StopTimeout: 10 * time.Second, LiveTiming: liveTiming,
			Spec: &specs.Spec{
				Version: ociVersion,
				Process: &specs.Process{
					Args: append([]string{c.kube(), name}, args...),
					Env:  []string{"PATH=" + services.DefaultPath},
					Cwd:  "/",
				},
				Root: &specs.Root{Path: "/"},
			},
		}
		if ready != "" {
			p, _ := services.ParseProbe(ready)
			d.Ready = &p
		}
		if live != "" {
			p, _ := services.ParseProbe(live)
			d.Live = &p
		}
		return d
	}
	kubelet := def(Kubelet, "http://127.0.0.1:10248/healthz", "http://127.0.0.1:10248/healthz", []string{APIServer},
		"--config="+c.config("kubelet.yaml"), "--kubeconfig="+c.config("kubelet.conf"),
		"--root-dir=/var/lib/kubelet", "--hostname-override="+NodeName, "--node-ip="+node)
	// kubelet reads the kernel's log (/dev/kmsg: OOM kills) and hands
	// devices to pods: every device, as a privileged container has.
	kubelet.Spec.Linux = &specs.Linux{Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}}
	return []services.Definition{
		def(Etcd, "http://127.0.0.1:2381/health", "http://127.0.0.1:2381/health", nil,
			"--name=docker-desktop", "--data-dir="+c.etcdDir(),
			// The loopback only: nothing outside the namespace reaches it.
			"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
			"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
			"--initial-cluster=docker-desktop=http://127.0.0.1:2380",
			"--listen-metrics-urls=http://127.0.0.1:2381", "--snapshot-count=10000", "--quota-backend-bytes=2147483648"),
		def(APIServer, "https://127.0.0.1:6443/readyz", "https://127.0.0.1:6443/livez", []string{Etcd},
			"--etcd-servers=http://127.0.0.1:2379", "--service-cluster-ip-range="+ServiceRange,
			fmt.Sprintf("--secure-port=%d", APIPort), "--advertise-address="+node,
			"--client-ca-file="+ca.Cert, "--tls-cert-file="+api.Cert, "--tls-private-key-file="+api.Key,
			"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--authorization-mode=Node,RBAC", "--allow-privileged=true",
			"--kubelet-client-certificate="+apiClient.Cert, "--kubelet-client-key="+apiClient.Key,
			"--kubelet-certificate-authority="+ca.Cert, "--kubelet-preferred-address-types=InternalIP",
			"--enable-bootstrap-token-auth=false", "--profiling=false"),
		def(ControllerManager, "https://127.0.0.1:10257/healthz", "https://127.0.0.1:10257/healthz", []string{APIServer},
			"--kubeconfig="+c.config("controller-manager.conf"),
			"--authentication-kubeconfig="+c.config("controller-manager.conf"),
			"--authorization-kubeconfig="+c.config("controller-manager.conf"),
			"--service-account-private-key-file="+saKey, "--root-ca-file="+ca.Cert,
			"--cluster-signing-cert-file="+ca.Cert, "--cluster-signing-key-file="+ca.Key,
			"--use-service-account-credentials=true", "--leader-elect=false", "--bind-address=127.0.0.1",
			"--service-cluster-ip-range="+ServiceRange, "--cluster-cidr="+PodRange, "--profiling=false"),
		def(Scheduler, "https://127.0.0.1:10259/healthz", "https://127.0.0.1:10259/healthz", []string{APIServer},
			"--kubeconfig="+c.config("scheduler.conf"),
			"--authentication-kubeconfig="+c.config("scheduler.conf"),
			"--authorization-kubeconfig="+c.config("scheduler.conf"),
			"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"),
		kubelet,
		// The node's address given, not found: kube-proxy started before
		// the node had one waits, then programs no Service.
		// nf_conntrack_max left as the kernel sized it: kube-proxy would
		// raise it to 32768 per core (at least 131072), but it is the
		// kernel's, read-only outside the first network namespace, and
		// kube-proxy exits when it cannot (a kernel with 4 GB or less
		// sizes it 65536: WSL's default on an 8 GB machine).
		def(Proxy, "http://127.0.0.1:10256/healthz", "", []string{APIServer},
			"--kubeconfig="+c.config("kube-proxy.conf"), "--cluster-cidr="+PodRange,
			"--hostname-override="+NodeName, "--bind-address="+node,
			"--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
			"--conntrack-max-per-core=0"),
		def(CoreDNS, "http://127.0.0.1:8181/ready", "http://127.0.0.1:8080/health", []string{APIServer},
			"-conf", c.config("Corefile")),
	}
}

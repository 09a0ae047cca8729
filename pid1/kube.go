package pid1

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/enginestate"
	"github.com/ddinit/ddinit/kube"
	"github.com/ddinit/ddinit/kubeapi"
	"github.com/ddinit/ddinit/network"
	"github.com/ddinit/ddinit/regularfile"
	"github.com/ddinit/ddinit/rootfs"
	"github.com/ddinit/ddinit/services"
	"github.com/ddinit/ddinit/wire"
	"github.com/sirupsen/logrus"
)

// The Kubernetes cluster: its image is opened before the root switch
// (the distro's paths are out of reach after it) and unpacked, with the
// cluster's files written, the first time the setting is on. Switching
// it restarts the engine: containerd with its CRI plugin on (or off),
// dockerd with it (live-restore keeps containers running), the cluster's
// seven services run by the new supervisor. What a cluster switched off
// leaves (pods' containers, their network) is removed then.

// Paths in the namespace.
const (
	kubeDir      = "/var/lib/kubernetes" // the data store's
	kubeRunDir   = "/run/ddinit/kubernetes"
	kubeletDir   = "/var/lib/kubelet"
	kubeImageDir = kubeDir + "/image"
)

// kubeState is the cluster as PID 1 runs it (under in.mu).
type kubeState struct {
	image    *os.File // the Kubernetes image, opened at boot (nil: none)
	digest   string
	imageErr string // why there is none
	on       bool   // wanted: the setting as last switched
	cluster  *kube.Cluster
	running  *kube.Cluster      // the one the last supervisor made runs (nil: none)
	stop     context.CancelFunc // ends the running cluster's goroutines
	stopped  chan struct{}
	ready    bool   // the API server answers, as last told
	failed   string // why the cluster could not be prepared, when it is on
	// closing: PID 1 is shutting down; no switch or reset starts an
	// engine any more (set under engineOps).
	closing bool
}

// openKubernetesImage opens the Kubernetes image and reads the digest it
// must have, before the root switch. A missing image is no error: the
// cluster cannot be switched on, and says why.
func (in *pid1) openKubernetesImage() {
	path := in.cfg.KubernetesImage
	k := &in.kube
	if path == "" || path == "none" {
		k.imageErr = "ddinit was given no Kubernetes image (--kubernetes-image)"
		return
	}
	digest, _, err := rootfs.ExpectedDigest(path, in.cfg.KubernetesImageDigest)
	if err == nil {
		k.image, err = os.Open(path)
	}
	if err != nil {
		k.imageErr = fmt.Sprintf("the Kubernetes image %s: %v", path, err)
		return
	}
	k.digest = digest
}

// prepareCluster unpacks the Kubernetes image (verified; a cache hit
// after the first time) and writes the cluster's files.
func (in *pid1) prepareCluster() (*kube.Cluster, error) {
	in.mu.Lock()
	k := in.kube
	in.mu.Unlock()
	if k.image == nil {
		return nil, fmt.Errorf("%w: Kubernetes cannot be switched on: %s", errdefs.ErrFailedPrecondition, k.imageErr)
	}
	if v := services.ContainerdConfigVersion(in.componentVersion("containerd")); v < 3 {
		return nil, fmt.Errorf("%w: Kubernetes cannot be switched on: this version pack's containerd %s has no CRI that kubelet %s speaks to (containerd 2.0 or later)", errdefs.ErrFailedPrecondition, in.componentVersion("containerd"), "1.37")
	}
	log := in.log.WithField("component", "kubernetes")
	cache, err := rootfs.OpenCache(kubeImageDir, log)
	if err != nil {
		return nil, err
	}
	defer cache.Close()
	layer, err := cache.Ensure(rootfs.Source{Name: "Kubernetes", Path: fmt.Sprintf("/proc/self/fd/%d", k.image.Fd()), Digest: k.digest}, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	m, err := kube.ReadManifest(layer.Tree)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	_, inner, err := network.Addrs(in.cfg.Subnet)
	if err != nil {
		return nil, err
	}
	c := &kube.Cluster{
		Tree: layer.Tree, Dir: kubeDir, RunDir: kubeRunDir,
		NodeIP:              net.IP(inner.Addr().AsSlice()),
		CgroupV1:            in.cgroups != nil && !in.cgroups.V2,
		Containerd:          containerdSocket,
		RestrictOOMScoreAdj: !services.CanLowerOOMScores(),
		Manifest:            m,
	}
	_, report, err := c.Prepare()
	if err != nil {
		return nil, err
	}
	if len(report) > 0 {
		log.WithField("made", report).Info("the cluster's PKI made")
	}
	if err := cache.Collect([]string{layer.Digest}); err != nil {
		log.WithError(err).Warn("the Kubernetes image cache was not tidied")
	}
	in.mu.Lock()
	in.kube.cluster, in.kube.failed = c, ""
	in.mu.Unlock()
	return c, nil
}

// clusterFor is the cluster a new supervisor runs: nil when Kubernetes is
// off (or could not be prepared: logged, and /status says why).
func (in *pid1) clusterFor() *kube.Cluster {
	in.mu.Lock()
	on, c := in.kube.on, in.kube.cluster
	in.mu.Unlock()
	if !on {
		return nil
	}
	if c != nil {
		return c
	}
	c, err := in.prepareCluster()
	if err != nil {
		in.log.WithError(err).Error("Kubernetes is on but cannot run")
		in.mu.Lock()
		in.kube.failed = err.Error()
		in.mu.Unlock()
		return nil
	}
	return c
}

// runningCluster is the cluster the last supervisor made runs.
func (in *pid1) runningCluster() *kube.Cluster {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.kube.running
}

// withCluster is a supervisor configuration and definitions with the
// cluster's, or with what a cluster left cleared.
func withCluster(cfg services.Config, defs []services.Definition, c *kube.Cluster, log *logrus.Entry) (services.Config, []services.Definition) {
	if c == nil {
		cfg.ClearNamespaces = []string{kube.CRINamespace}
		return cfg, defs
	}
	cfg.CRI = c.CRI()
	cfg.Settings = map[string]bool{kube.Setting: true}
	ours := map[string]bool{}
	for _, n := range kube.Components {
		ours[n] = true
	}
	var all []services.Definition
	for _, d := range defs {
		if ours[d.Name] {
			log.WithField("service", d.Name).Warn("the version pack's definition is left out: the Kubernetes image's runs")
			continue
		}
		all = append(all, d)
	}
	return cfg, append(all, c.Definitions()...)
}

// clusterStarted follows a supervisor's cluster: the pause image in
// place, the cluster's own objects kept, docker's images given to it,
// and ddinit run told when the API server is ready or not.
func (in *pid1) clusterStarted(sup *services.Supervisor, c *kube.Cluster) {
	in.stopCluster() // a previous supervisor's, if it was left
	if c == nil {
		in.tellKube(false, false)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	in.mu.Lock()
	in.kube.stop, in.kube.stopped = func() { cancel(); <-done }, done
	sock := in.dockerSocket
	in.mu.Unlock()
	log := in.log.WithField("component", "kubernetes")
	in.tellKube(true, false)
	go func() {
		defer close(done)
		client, err := containerd.New(containerdSocket, containerd.WithTimeout(10*time.Second))
		if err != nil {
			log.WithError(err).Error("containerd does not answer: no pause image for the cluster")
			return
		}
		defer client.Close()
		if err := c.ImportPause(ctx, client); err != nil {
			log.WithError(err).Error("the cluster has no pause image: no pod can start")
		}
		if sock != "" {
			images := &kube.ImageSync{DockerSocket: sock, Containerd: client, Log: log}
			synced := make(chan struct{})
			go func() { defer close(synced); images.Run(ctx) }()
			defer func() { <-synced }()
			// First (deferred last): the loop ends when its supervisor
			// stops, and the sync with it.
			defer cancel()
		}
		api := c.Client()
		defer api.Close()
		kept := false
		ready := false
		for ctx.Err() == nil {
			st, err := sup.Await(ctx, kube.APIServer, func(st services.Status) bool { return st.Ready != ready })
			if err != nil {
				return
			}
			ready = st.Ready
			for ready && !kept && ctx.Err() == nil {
				if err := c.KeepObjects(ctx, api); err != nil {
					log.WithError(err).Warn("the cluster's DNS service not kept yet")
					select {
					case <-ctx.Done():
					case <-time.After(2 * time.Second):
					}
					continue
				}
				kept = true
			}
			in.tellKube(true, ready)
		}
	}()
}

// stopCluster ends the running cluster's goroutines (before its
// supervisor stops).
func (in *pid1) stopCluster() {
	in.mu.Lock()
	stop := in.kube.stop
	in.kube.stop = nil
	in.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// tellKube tells ddinit run where the cluster is.
func (in *pid1) tellKube(on, ready bool) {
	in.mu.Lock()
	in.kube.ready = ready
	in.mu.Unlock()
	m := &wire.Kube{On: on, Ready: ready}
	if on {
		_, inner, _ := network.Addrs(in.cfg.Subnet)
		m.APIServer = net.JoinHostPort(inner.Addr().String(), fmt.Sprint(kube.APIPort))
		m.Kubeconfig = "var/lib/kubernetes/config/admin.conf"
	}
	in.tell(wire.Message{Kind: wire.KubernetesState, Kube: m})
}

// switchKubernetes turns the cluster on or off: the engine restarts
// with (or without) containerd's CRI and the cluster's services. Nothing
// changes when the cluster cannot be switched on (no image, a pack whose
// containerd has no CRI for it).
func (in *pid1) switchKubernetes(on bool) error {
	in.engineOps.Lock()
	defer in.engineOps.Unlock()
	if err := in.engineOpen(); err != nil {
		return err
	}
	if on {
		if _, err := in.prepareCluster(); err != nil {
			return err
		}
	}
	in.mu.Lock()
	was := in.kube.on
	in.kube.on = on
	in.mu.Unlock()
	if was == on {
		return nil
	}
	if stopped, _ := in.engineHeld(); stopped {
		if on {
			// Kubernetes on is not idle: the engine wakes with it (the
			// wake takes its turn after this switch).
			in.bg.Go(func(context.Context) { in.wake() })
		}
		return nil // a stopped engine left no cluster running
	}
	if err := in.thawForRestart(); err != nil {
		in.mu.Lock()
		in.kube.on = was
		in.mu.Unlock()
		return err
	}
	err := in.restartEngine()
	if err != nil && on {
		in.log.WithError(err).Error("the engine did not come back with Kubernetes: back without it")
		in.mu.Lock()
		in.kube.on = false
		in.mu.Unlock()
		if err2 := in.restartEngine(); err2 != nil {
			in.log.WithError(err2).Error("the engine did not come back without Kubernetes either")
		}
		return err
	}
	if !on {
		in.clearCluster()
	}
	return err
}

// engineOpen refuses a switch or reset while PID 1 boots or shuts down
// (in.engineOps held): the engine is not its to restart then.
func (in *pid1) engineOpen() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch {
	case in.kube.closing:
		return fmt.Errorf("%w: ddinit is shutting down", errdefs.ErrUnavailable)
	case in.state != control.StateRunning || in.sup == nil:
		return fmt.Errorf("%w: the engine is %s: try again when /ping answers", errdefs.ErrUnavailable, in.state)
	}
	return nil
}

// thawForRestart brings a paused engine back to running through the
// state machine, as a wake does (in.engineOps held), so that the restart
// that follows starts from running.
func (in *pid1) thawForRestart() error {
	if _, paused := in.engineHeld(); !paused {
		return nil
	}
	if !in.engine.Step(enginestate.Waking, "", enginestate.Paused, enginestate.GivingBack) {
		return nil
	}
	in.reportEngine()
	in.endGiveBack(false)
	if err := in.thaw(); err != nil {
		in.moveEngine(enginestate.WakeFailed, err.Error())
		return err
	}
	in.moveEngine(enginestate.Running, "")
	return nil
}

// clearCluster removes what a cluster switched off left in the
// namespace's network (its containers went with containerd's restart).
func (in *pid1) clearCluster() {
	log := in.log.WithField("component", "kubernetes")
	if err := kube.ClearPodNamespaces(); err != nil {
		log.WithError(err).Warn("pods' network namespaces left")
	}
	if err := network.ClearCluster(in.reaper); err != nil {
		log.WithError(err).Warn("the pods' network left in part")
	}
}

// restartEngine stops the supervisor in force and starts a new one, as
// the settings now say (in.engineOps held).
func (in *pid1) restartEngine() error {
	// Told first, so that ddinit run ends its own event streams (dockerd
	// 28 waits 5 s at its stop for open requests) and holds new clients
	// until the engine is back. An engine not running (stopped idle)
	// is not restarted: its next start reads what is in force now.
	if !in.engine.Step(enginestate.Stopping, "restarting with Kubernetes switched", enginestate.Running) {
		return nil
	}
	in.reportEngine()
	in.mu.Lock()
	old := in.sup
	in.mu.Unlock()
	in.stopCluster()
	if old != nil {
		old.Stop()
	}
	if err := in.startEngine(); err != nil {
		// Stopped, not running: the next client (or switch) starts it
		// again, and /ping says why meanwhile.
		in.stopCluster()
		in.moveEngine(enginestate.Stopped, "the engine did not come back: "+err.Error())
		return err
	}
	in.moveEngine(enginestate.Running, "")
	return nil
}

// ResetKubernetes wipes the cluster's state (etcd, the PKI, kubelet's
// folder) and, when it is on, starts a new empty one.
func (in *pid1) resetKubernetes() error {
	in.engineOps.Lock()
	defer in.engineOps.Unlock()
	if err := in.engineOpen(); err != nil {
		return err
	}
	if err := in.thawForRestart(); err != nil {
		return err
	}
	in.mu.Lock()
	on := in.kube.on
	in.mu.Unlock()
	log := in.log.WithField("component", "kubernetes")
	log.Info("resetting the cluster")
	if on {
		in.mu.Lock()
		in.kube.on = false
		in.mu.Unlock()
		err := in.restartEngine()
		in.clearCluster()
		if err != nil {
			in.mu.Lock()
			in.kube.on = true
			in.mu.Unlock()
			return err
		}
	}
	c := &kube.Cluster{Dir: kubeDir, RunDir: kubeRunDir}
	clearErr := c.ClearState(kubeletDir)
	in.mu.Lock()
	in.kube.cluster = nil
	in.kube.on = on // as the setting says, whatever follows
	in.mu.Unlock()
	if clearErr != nil {
		return clearErr
	}
	if !on {
		return nil
	}
	if _, err := in.prepareCluster(); err != nil {
		in.mu.Lock()
		in.kube.failed = err.Error()
		in.mu.Unlock()
		return err
	}
	return in.restartEngine()
}

// kubeStatus is the cluster as /status shows it.
func (in *pid1) kubeStatus(sup *services.Supervisor) *control.Kubernetes {
	in.mu.Lock()
	k := in.kube
	in.mu.Unlock()
	st := &control.Kubernetes{On: k.on}
	if k.cluster != nil {
		st.Version = k.cluster.Manifest.Version(kube.Kubelet)
	}
	switch {
	case !k.on:
		st.State = "off"
		if k.image == nil {
			st.Reason = k.imageErr
		}
		return st
	case k.cluster == nil:
		st.State, st.Reason = "failed", k.failed
		return st
	}
	st.State = "running"
	if sup != nil {
		for _, s := range sup.Status() {
			for _, n := range kube.Components {
				if s.Name == n && !s.Ready && st.Reason == "" {
					st.State, st.Reason = "starting", fmt.Sprintf("%s is %s", s.Name, s.State)
					if s.Reason != "" {
						st.Reason += ": " + s.Reason
					}
				}
			}
		}
	}
	if st.State == "running" && k.ready {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		api := k.cluster.Client()
		ready, why := kube.NodeReady(ctx, api)
		api.Close()
		cancel()
		st.NodeReady = ready
		if !ready {
			st.State, st.Reason = "starting", why
		}
	}
	return st
}

// adminKubeconfig is the cluster's admin kubeconfig, once a cluster was
// prepared (the credentials stay valid while it is off).
func (in *pid1) adminKubeconfig() ([]byte, error) {
	in.mu.Lock()
	c := in.kube.cluster
	in.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("%w: Kubernetes has not run since ddinit started: switch it on first", errdefs.ErrFailedPrecondition)
	}
	return regularfile.Read(c.AdminKubeconfig(), kubeapi.MaxKubeconfigBytes)
}

package launcher

import (
	"fmt"
	"path/filepath"

	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/kubeports"
	"github.com/ddinit/ddinit/wire"
)

// newKube is the publisher of the Kubernetes cluster in the distro
// (package kubeports): the API server on 127.0.0.1:6443, the LoadBalancer
// Services' ports, the admin kubeconfig offered to the distros. It
// publishes what PID 1's kubernetes-state messages say (kubeState).
func (l *launcher) newKube() *kubeports.Publisher {
	return kubeports.New(kubeports.Options{
		Shared:           l.cfg.WSLShared,
		SharedKubeconfig: config.SharedKubeconfig,
		Log:              l.log.WithField("component", "kubernetes"),
	})
}

// kubeState publishes the cluster as PID 1 now reports it.
func (l *launcher) kubeState(k wire.Kube) {
	s, err := kubeStateOf(k, l.ds.Path)
	if err != nil {
		l.log.WithError(err).WithField("component", "kubernetes").Warn("the distros are offered no Kubernetes kubeconfig")
	}
	l.kube.Set(s)
}

// kubeStateOf is the publisher's state for PID 1's report: its
// kubeconfig, a path relative to the data store, resolved there; one
// that would lead out of it is not used (it is copied where every distro
// reads it).
func kubeStateOf(k wire.Kube, inStore func(rel string) string) (kubeports.State, error) {
	s := kubeports.State{On: k.On, Ready: k.Ready, APIServer: k.APIServer}
	switch {
	case k.Kubeconfig == "":
	case !filepath.IsLocal(k.Kubeconfig):
		return s, fmt.Errorf("PID 1 named the kubeconfig %q, not a path within the data store", k.Kubeconfig)
	default:
		s.Kubeconfig = inStore(k.Kubeconfig)
	}
	return s, nil
}

package launcher

import (
	"path/filepath"
	"testing"

	"github.com/ddinit/ddinit/kubeports"
	"github.com/ddinit/ddinit/wire"
)

// The kubeconfig PID 1 names is the data store's; a path out of it is
// refused, and the rest of the state still passes on.
func TestKubeStateOf(t *testing.T) {
	store := func(rel string) string { return filepath.Join("/data", rel) }
	k := wire.Kube{On: true, Ready: true, APIServer: "100.64.249.2:6443", Kubeconfig: "etc/kubernetes/admin.conf"}
	s, err := kubeStateOf(k, store)
	if err != nil || s != (kubeports.State{On: true, Ready: true, APIServer: "100.64.249.2:6443", Kubeconfig: "/data/etc/kubernetes/admin.conf"}) {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []string{"../etc/shadow", "/etc/shadow", "etc/../../x"} {
		k.Kubeconfig = bad
		s, err := kubeStateOf(k, store)
		if err == nil || s.Kubeconfig != "" || !s.On || s.APIServer != k.APIServer {
			t.Errorf("%q: %+v %v", bad, s, err)
		}
	}
	if s, err := kubeStateOf(wire.Kube{}, store); err != nil || s != (kubeports.State{}) {
		t.Errorf("off: %+v %v", s, err)
	}
}

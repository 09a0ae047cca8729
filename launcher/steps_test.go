package launcher

import (
	"slices"
	"testing"
)

// The launch is named once each step, in the order it needs them: the
// data store locked before anything of it is read, the control sockets
// before PID 1 (which serves them), held with the exposed sockets for the
// whole life (a PID 1 replaced keeps them), the network before the
// sockets it carries, the exposure before the settling that waits for it;
// the CLI tools' offer and the Kubernetes publisher held for the whole
// life too (withdrawn once PID 1 has ended, before the sockets close).
// (How a table runs and undoes is package steps', tested there.)
func TestLaunchStepsOrder(t *testing.T) {
	var names []string
	for _, s := range holdSteps {
		names = append(names, s.Name)
	}
	for _, s := range startSteps {
		names = append(names, s.Name)
	}
	for _, s := range socketSteps {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"lock data store", "open log", "control sockets", "exposed sockets", "CLI tools", "kubernetes", "start PID 1", "network", "dns", "follow drives and devices", "expose sockets", "engine on demand", "settle"}) {
		t.Fatalf("launch steps: %v", names)
	}
	for _, s := range socketSteps {
		if s.Optional != (s.Name == "network" || s.Name == "dns") {
			t.Errorf("%s: optional %v", s.Name, s.Optional)
		}
	}
}

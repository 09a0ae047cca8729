package services

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A spec with no mount is stored with an empty "mounts" block (crun
// refuses one without), and the rest of it as it was; one with mounts is
// stored as it is.
func TestSpecsKeepAMountsBlock(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mounts []specs.Mount
		want   int
	}{{"none", nil, 0}, {"one", []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}}, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"/usr/sbin/dockerd"}}, Root: &specs.Root{Path: "/"}, Mounts: tc.mounts}
			var c containers.Container
			if err := containerd.WithSpec(spec)(context.Background(), nil, &c); err != nil {
				t.Fatal(err)
			}
			if err := withMountsBlock(context.Background(), nil, &c); err != nil {
				t.Fatal(err)
			}
			var stored struct {
				Mounts  *[]specs.Mount `json:"mounts"`
				Process specs.Process  `json:"process"`
			}
			if err := json.Unmarshal(c.Spec.GetValue(), &stored); err != nil {
				t.Fatal(err)
			}
			if stored.Mounts == nil || len(*stored.Mounts) != tc.want || stored.Process.Args[0] != "/usr/sbin/dockerd" {
				t.Fatalf("stored: %s", c.Spec.GetValue())
			}
		})
	}
}

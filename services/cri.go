package services

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// CRI is what containerd's CRI plugin runs with when Kubernetes is on:
// ContainerdConfig with a CRI leaves the plugin (and, from containerd 2,
// its image and runtime plugins and the pod sandbox controller) on.
type CRI struct {
	// SandboxImage is the pause image, imported at start: pinned, so
	// the CRI never tries to pull it.
	SandboxImage string
	// RuntimeBinary is the OCI runtime pods run with (runc).
	RuntimeBinary string
	// CNIBinDirs hold the CNI plugins, CNIConfDir the network's
	// configuration.
	CNIBinDirs []string
	CNIConfDir string
	// RestrictOOMScoreAdj keeps pods' oom_score_adj at or above
	// containerd's own: where root lacks CAP_SYS_RESOURCE, runc cannot set
	// the -998 kubelet asks for a pod's sandbox, and no pod starts
	// ("can't get final child's PID from pipe").
	RestrictOOMScoreAdj bool
}

// criPlugins are the plugins CRI needs on, by config format version.
func criPlugins(version int) []string {
	if version >= 3 {
		return []string{"io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "io.containerd.podsandbox.controller.v1.podsandbox"}
	}
	return []string{"io.containerd.grpc.v1.cri"}
}

// criSection is the CRI plugins' configuration in the format of version:
// 3 and later split it into an image and a runtime plugin; 2 (containerd
// 1.x) has one plugin. The streaming server keeps containerd's default,
// the loopback of ddinit's namespace: nothing outside it reaches it.
func criSection(version int, c CRI) string {
	var b strings.Builder
	list := func(s []string) string {
		q := make([]string, len(s))
		for i, v := range s {
			q[i] = fmt.Sprintf("%q", v)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	if version >= 3 {
		fmt.Fprintf(&b, "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"overlayfs\"\n")
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.images'.pinned_images]\n    sandbox = %q\n", c.SandboxImage)
		fmt.Fprintf(&b, "\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = %t\n", c.RestrictOOMScoreAdj)
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.runtime'.containerd]\n    default_runtime_name = \"runc\"\n")
		fmt.Fprintf(&b, "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
		fmt.Fprintf(&b, "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n        BinaryName = %q\n        SystemdCgroup = false\n", c.RuntimeBinary)
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    bin_dirs = %s\n    conf_dir = %q\n", list(c.CNIBinDirs), c.CNIConfDir)
		return b.String()
	}
	binDir := ""
	if len(c.CNIBinDirs) > 0 {
		binDir = c.CNIBinDirs[0] // 1.x reads one folder
	}
	fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = %q\n  restrict_oom_score_adj = %t\n", c.SandboxImage, c.RestrictOOMScoreAdj)
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = \"overlayfs\"\n    default_runtime_name = \"runc\"\n")
	fmt.Fprintf(&b, "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
	fmt.Fprintf(&b, "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n        BinaryName = %q\n        SystemdCgroup = false\n", c.RuntimeBinary)
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = %q\n    conf_dir = %q\n", binDir, c.CNIConfDir)
	return b.String()
}

// CanLowerOOMScores reports whether this process may set an
// oom_score_adj below its own (CAP_SYS_RESOURCE in its effective set):
// where it cannot, a CRI must restrict pods' scores (CRI's
// RestrictOOMScoreAdj).
func CanLowerOOMScores() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0
}

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
			q[i] = tomlString(v)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	if version >= 3 {
		fmt.Fprintf(&b, "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"overlayfs\"\n")
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.images'.pinned_images]\n    sandbox = %s\n", tomlString(c.SandboxImage))
		fmt.Fprintf(&b, "\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = %t\n", c.RestrictOOMScoreAdj)
		fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.runtime'.containerd]\n    default_runtime_name = \"runc\"\n")
		fmt.Fprintf(&b, "    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
		fmt.Fprintf(&b, "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n        BinaryName = %s\n        SystemdCgroup = false\n", tomlString(c.RuntimeBinary))
		// bin_dirs from 2.4 (2.1 to 2.3 read both; 2.0 only bin_dir).
		if version >= 4 {
			fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    bin_dirs = %s\n    conf_dir = %s\n", list(c.CNIBinDirs), tomlString(c.CNIConfDir))
		} else {
			fmt.Fprintf(&b, "  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    bin_dir = %s\n    conf_dir = %s\n", tomlString(firstOf(c.CNIBinDirs)), tomlString(c.CNIConfDir))
		}
		return b.String()
	}
	binDir := firstOf(c.CNIBinDirs) // 1.x reads one folder
	fmt.Fprintf(&b, "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = %s\n  restrict_oom_score_adj = %t\n", tomlString(c.SandboxImage), c.RestrictOOMScoreAdj)
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    snapshotter = \"overlayfs\"\n    default_runtime_name = \"runc\"\n")
	fmt.Fprintf(&b, "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
	fmt.Fprintf(&b, "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n        BinaryName = %s\n        SystemdCgroup = false\n", tomlString(c.RuntimeBinary))
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = %s\n    conf_dir = %s\n", tomlString(binDir), tomlString(c.CNIConfDir))
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

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// tomlString is s as a TOML basic string: only the escapes TOML has (Go's
// %q writes \a, \v and \xNN, which containerd refuses or misreads). TOML
// strings are UTF-8: bytes that are not become U+FFFD, a path containerd
// then does not find, rather than one it reads as another.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

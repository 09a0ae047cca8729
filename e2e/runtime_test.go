package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// ddinit's own tasks run under the runtime chosen: by default crun,
// which the version pack carries, where the cgroup hierarchy is v2 alone
// (WSL's, the VM's; crun 1.8 refuses a hybrid one), else runc; what
// /status and ddinit status say, and the runtime's own state beside the
// task; users' containers under dockerd's runc; --service-runtime runc
// puts dockerd under runc anyway; a dockerd killed under the default is
// restarted, its container kept.
func TestServicesRunUnderTheChosenRuntime(t *testing.T) {
	harness.RequireEnvironment(t)
	auto := "runc"
	var st syscall.Statfs_t
	if syscall.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
		auto = "crun"
	}
	for _, choice := range []string{"auto", "runc"} {
		t.Run(choice, func(t *testing.T) {
			runtime := auto
			o := harness.Options{}
			if choice == "runc" {
				runtime = "runc"
				o.Extra = []string{"--service-runtime", "runc"}
			}
			in := harness.Start(t, o)
			in.WaitPing(60 * time.Second)
			var dockerd string
			for _, s := range in.Status().Services {
				if s.Name == "dockerd" {
					dockerd = s.Runtime
				}
			}
			if dockerd != runtime {
				t.Fatalf("/status: dockerd runs under %q, want %s", dockerd, runtime)
			}
			if out, err := in.CLI("status"); err != nil || !regexpLine(out, "dockerd", runtime) {
				t.Fatalf("ddinit status does not show dockerd under %s: %v\n%s", runtime, err, out)
			}
			// The task's state as its runtime keeps it: runc's state.json,
			// crun's status file.
			root := fmt.Sprintf("/proc/%d/root", in.Pid1())
			state := map[string]string{"runc": "state.json", "crun": "status"}[runtime]
			if _, err := os.Stat(filepath.Join(root, "run/containerd/runc/services.ddinit/dockerd", state)); err != nil {
				t.Fatalf("dockerd's task has no %s state: %v", runtime, err)
			}
			// Users' containers: dockerd's runc.
			in.ImportBusybox()
			id := strings.TrimSpace(in.Docker("run", "-d", "busybox:local", "sleep", "600"))
			if _, err := os.Stat(filepath.Join(root, "run/docker/runtime-runc/moby", id, "state.json")); err != nil {
				t.Fatalf("a user's container is not runc's: %v", err)
			}
			if choice != "auto" {
				return
			}
			// Killed: restarted, the container kept.
			ns := in.PidNS()
			pid := onlyComm(t, ns, "dockerd")
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(t, pid)
			in.WaitPing(30 * time.Second)
			if out := strings.TrimSpace(in.Docker("inspect", "-f", "{{.State.Running}}", id)); out != "true" {
				t.Fatalf("the container after dockerd's restart: running %s", out)
			}
		})
	}
}

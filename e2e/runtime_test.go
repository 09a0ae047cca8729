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

// ddinit's own tasks run under crun, the version pack carries it (what
// /status and ddinit status say, and crun's own state beside the task),
// users' containers under dockerd's runc; --service-runtime runc puts
// dockerd back under runc; a dockerd killed under crun is restarted.
func TestServicesRunUnderTheChosenRuntime(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, runtime := range []string{"crun", "runc"} {
		t.Run(runtime, func(t *testing.T) {
			o := harness.Options{}
			if runtime == "runc" {
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
			if runtime != "crun" {
				return
			}
			// Killed under crun: restarted, the container kept.
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

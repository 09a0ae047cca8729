package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ddinit/ddinit/control"
)

// kubernetesCommands are `ddinit kubernetes reset`.
var kubernetesCommands = []command{
	{name: "reset", summary: "wipe the cluster (etcd, certificates, kubelet's state) and, when Kubernetes is on, start a new empty one", setup: kubernetesReset},
}

func kubernetesReset(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the new cluster's services to start")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		_, resp, err := request(context.Background(), *controlAddr, *timeout, http.MethodPost, "/kubernetes/reset", false)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("kubernetes reset: %w", control.ResponseError(resp))
		}
		fmt.Fprintln(env.Stdout, "the cluster was reset: `ddinit status` shows the new one coming up")
		return nil
	}
}

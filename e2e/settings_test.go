package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The frontend's settings: applied live (dockerd only restarts, containers
// keep running), refused before anything changes when invalid or stale,
// rolled back when dockerd refuses them, a kubernetes switch refused with
// nothing changed when there is no Kubernetes image (the real cluster:
// TestKubernetes), and in force from the first start after a reboot.
func TestSettings(t *testing.T) {
	harness.RequireEnvironment(t)
	// A pack's own service of the kubernetes setting (a stand-in) stays
	// off while no cluster can run.
	pack := harness.CustomPack(t, func(root string) {
		harness.AddService(t, root, "kubelet", []string{"/bin/sh", "-c", "echo kubelet stand-in; exec sleep 3600"},
			map[string]string{"io.ddinit.service.setting": "kubernetes", "io.ddinit.service.required": "false", "io.ddinit.service.depends-on": "dockerd"})
	})
	data, _ := harness.NewDirs(t)
	cfg := map[string]any{"settingsDeadline": "20s"}
	in := harness.Start(t, harness.Options{DataDir: data, Pack: pack, Config: cfg})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	in.Docker("run", "-d", "--name", "before", "busybox:local", "sleep", "3600")
	startedAt := in.Docker("inspect", "-f", "{{.State.StartedAt}}", "before")
	pid1, started := in.Pid1(), in.Status().Started
	if st := serviceStatus(in.Status(), "kubelet"); st.State != "disabled" {
		t.Fatalf("kubelet with kubernetes off: %+v", st)
	}

	code, body := in.PutSettings(`{"generation": 0, "daemonJSON": {"log-driver": "local", "labels": ["settings-test=1"]}}`)
	if code != http.StatusOK || !strings.Contains(body, `"generation": 1`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if info := in.Docker("info", "--format", "{{.LoggingDriver}} {{json .Labels}}"); !strings.Contains(info, "local") || !strings.Contains(info, "settings-test=1") {
		t.Fatalf("docker info after the change: %s", info)
	}
	if running := in.Docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", "before"); running != "true "+startedAt {
		t.Fatalf("the container from before the change: %q (started %s)", running, startedAt)
	}
	if in.Pid1() != pid1 || !in.Status().Started.Equal(started) {
		t.Fatal("PID 1 was restarted for a settings change")
	}

	for doc, field := range map[string]string{
		`{"generation": 1, "daemonJSON": {`:              "(document)",
		`{"generation": 1, "colour": "blue"}`:            "colour",
		`{"generation": 1, "daemonJSON": {"hosts": []}}`: "daemonJSON.hosts",
	} {
		code, body := in.PutSettings(doc)
		var answer struct{ Field string }
		json.Unmarshal([]byte(body), &answer)
		if code != http.StatusBadRequest || answer.Field != field {
			t.Errorf("%s: %d %s, want 400 naming %s", doc, code, body, field)
		}
	}
	if code, body := in.PutSettings(`{"generation": 0, "kubernetes": true}`); code != http.StatusConflict {
		t.Errorf("a stale generation: %d %s", code, body)
	}
	if err := harness.Ping(in.Sock); err != nil || in.Status().SettingsGeneration != 1 {
		t.Fatalf("after refused documents: %v, generation %d", err, in.Status().SettingsGeneration)
	}

	// A daemon.json dockerd refuses: rolled back within the deadline.
	begin := time.Now()
	code, body = in.PutSettings(`{"generation": 1, "daemonJSON": {"log-driver": "local", "labels": ["settings-test=1"], "bogus-option": true}}`)
	t.Logf("refused change answered in %s: %d %s", time.Since(begin).Round(time.Millisecond), code, body)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "rolled back") || !strings.Contains(body, "bogus-option") {
		t.Fatalf("a daemon.json dockerd refuses: %d %s", code, body)
	}
	in.WaitPing(30 * time.Second)
	if info := in.Docker("info", "--format", "{{json .Labels}}"); !strings.Contains(info, "settings-test=1") {
		t.Fatalf("after the rollback dockerd runs on %s", info)
	}
	if st := in.Status(); st.SettingsGeneration != 1 || !strings.Contains(st.SettingsError, "bogus-option") {
		t.Fatalf("status after the rollback: generation %d, error %q", st.SettingsGeneration, st.SettingsError)
	}
	if out, _ := in.CLI("status"); !strings.Contains(out, "bogus-option") {
		t.Fatalf("ddinit status does not show the failure:\n%s", out)
	}

	// Kubernetes on with no Kubernetes image: refused, saying why, with
	// nothing changed.
	if code, body := in.PutSettings(`{"generation": 1, "daemonJSON": {"log-driver": "local", "labels": ["settings-test=1"]}, "kubernetes": true}`); code/100 != 4 || !strings.Contains(body, "Kubernetes image") || !strings.Contains(body, `"generation": 1`) {
		t.Fatalf("kubernetes on without an image: %d %s", code, body)
	}
	if st := serviceStatus(in.Status(), "kubelet"); st.State != "disabled" || st.PID != 0 {
		t.Fatalf("kubelet after a refused switch: %+v", st)
	}
	if k := in.Status().Kubernetes; k == nil || k.State != "off" || !strings.Contains(k.Reason, "Kubernetes image") {
		t.Fatalf("/status of Kubernetes with no image: %+v", k)
	}
	for gen := 1; gen <= 2; gen++ { // two changes, as before the cluster came
		doc := fmt.Sprintf(`{"generation": %d, "daemonJSON": {"log-driver": "local", "labels": ["settings-test=1"]}, "idleStop": "%dh"}`, gen, gen+1)
		if code, body := in.PutSettings(doc); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", doc, code, body)
		}
	}
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// After a reboot dockerd starts on the stored document at once.
	again := harness.Start(t, harness.Options{DataDir: data, Pack: pack, Config: cfg})
	again.WaitPing(60 * time.Second)
	st := again.Status()
	if st.SettingsGeneration != 3 || serviceStatus(st, "dockerd").Restarts != 0 {
		t.Fatalf("after a reboot: generation %d, dockerd restarted %d times", st.SettingsGeneration, serviceStatus(st, "dockerd").Restarts)
	}
	if info := again.Docker("info", "--format", "{{.LoggingDriver}} {{json .Labels}}"); !strings.Contains(info, "settings-test=1") || !strings.Contains(info, "local") {
		t.Fatalf("dockerd's first start after a reboot: %s", info)
	}
	if code, _ := again.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

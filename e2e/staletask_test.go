package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"github.com/ddinit/ddinit/e2e/harness"
)

// containerd's delete of a service's ended task can be cut short after
// the shim forgot the task and before containerd dropped its record of
// the shim (a deadline passing on a loaded machine): containerd then
// answers Get with "not found" and Create with "already exists", for as
// long as nobody deletes the task again. It stranded the API server in
// the emulated guest. The test makes that state for real (the shim's
// own Delete, as containerd sends it first, and nothing after) during a
// service's restart backoff; the service must start again.
func TestServiceStartsAfterATaskDeleteCutShort(t *testing.T) {
	harness.RequireEnvironment(t)
	const name = "blinker"
	pack := harness.CustomPack(t, func(root string) {
		harness.AddService(t, root, name, []string{"/bin/sh", "-c", "sleep 0.3; exit 1"}, map[string]string{"io.ddinit.service.required": "false"})
	})
	in := harness.Start(t, harness.Options{Pack: pack, Config: map[string]any{
		"restart": map[string]any{"initial": "8s", "max": "8s", "resetAfter": "1m", "crashLoop": 50},
	}})
	in.WaitPing(60 * time.Second)
	starts := func() (started, exited int) {
		for _, e := range in.LogEntries() {
			if e["service"] != name {
				continue
			}
			switch e["msg"] {
			case "service started":
				started++
			case "service exited; restarting", "service is failing":
				exited++
			}
		}
		return
	}
	harness.WaitUntil(t, 30*time.Second, "the service's first exit", func() bool { _, exited := starts(); return exited >= 1 })
	before, _ := starts()

	// Within the backoff: a task of the service's container, run to its
	// end, then deleted by its shim alone.
	root := fmt.Sprintf("/proc/%d/root", in.Pid1())
	client, err := containerd.New(root+"/run/containerd/containerd.sock", containerd.WithDefaultNamespace("services.ddinit"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.LoadContainer(ctx, name)
	if err != nil {
		t.Fatalf("the service's container: %v", err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("a task of the service's container: %v", err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	<-exited
	shimDelete(t, ctx, root, name)
	if _, err := c.Task(ctx, nil); !errdefs.IsNotFound(err) {
		t.Fatalf("containerd still finds the task (%v): the state under test was not made", err)
	}
	if _, err := c.NewTask(ctx, cio.NullIO); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("containerd creates a task (%v): the state under test was not made", err)
	}
	if after, _ := starts(); after != before {
		t.Fatalf("the service restarted while the state was made (%d starts, then %d): give it a longer backoff", before, after)
	}

	harness.WaitUntil(t, 60*time.Second, "the service started again", func() bool { after, _ := starts(); return after > before })
	for _, e := range in.LogEntries() {
		if e["service"] == name && strings.Contains(fmt.Sprint(e["error"]), "already exists") && e["msg"] != "containerd kept the record of an ended task; deleting it again" {
			t.Fatalf("a start failed on the record: %v", e)
		}
	}
}

// shimDelete sends task id's shim the Delete containerd sends it first
// when it deletes a task, and nothing after.
func shimDelete(t *testing.T, ctx context.Context, root, id string) {
	t.Helper()
	bundle := filepath.Join(root, "run/containerd/io.containerd.runtime.v2.task/services.ddinit", id)
	var address string
	if b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var boot struct{ Address string }
		if err := json.Unmarshal(b, &boot); err != nil {
			t.Fatalf("the shim's bootstrap.json: %v", err)
		}
		address = boot.Address
	} else if b, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		address = strings.TrimSpace(string(b))
	} else {
		t.Fatalf("the shim's address: %v", err)
	}
	conn, err := net.Dial("unix", root+strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatalf("dial the shim: %v", err)
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	_, err = taskv3.NewTTRPCTaskClient(tc).Delete(ctx, &taskv3.DeleteRequest{ID: id})
	if err != nil && strings.Contains(err.Error(), "containerd.task.v3.Task") {
		// A containerd 1.x shim serves the v2 API only.
		_, err = taskv2.NewTaskClient(tc).Delete(ctx, &taskv2.DeleteRequest{ID: id})
	}
	if err != nil {
		t.Fatalf("the shim's delete: %v", err)
	}
}

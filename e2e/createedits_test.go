package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The docker API proxy edits a create body only where it must (the
// proxy's variables, /etc/hosts entries when daemon.json sets dns): the
// same body sent straight to dockerd and through the proxy makes two
// containers that docker inspect shows the same but for what the edits
// set — whatever the layout the client used, keys given twice, fields
// given twice that dockerd merges.
func TestCreateEditsChangeNothingElse(t *testing.T) {
	harness.RequireEnvironment(t)
	// On both engines: dockerd 20.10 reads a body's host settings at its
	// top level when it has no HostConfig, 28 does not.
	for _, pack := range []string{harness.PackISO, harness.Pack2010ISO} {
		t.Run(filepath.Base(pack), func(t *testing.T) { createEditsOn(t, pack) })
	}
}

func createEditsOn(t *testing.T, pack string) {
	in := harness.Start(t, harness.Options{Pack: pack})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	doc := `{"generation": 0, "daemonJSON": {"dns": ["10.0.0.53"]}, "proxy": {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}}`
	if code, body := in.PutSettings(doc); code != 200 {
		t.Fatalf("settings: %d %s", code, body)
	}
	direct := fmt.Sprintf("/proc/%d/root/run/docker.sock", in.Pid1())
	for _, tc := range []struct{ name, body string }{
		{"host settings at the top level",
			`{"Image":"busybox:local","Cmd":["true"],"Privileged":true,"PortBindings":{"80/tcp":[{"HostPort":"18080"}]},"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"CapAdd":["NET_ADMIN"],"ExposedPorts":{"80/tcp":{}}}`},
		{"privileged given twice",
			`{"Image":"busybox:local","Cmd":["true"],"privileged":true,"Privileged":false,"HostConfig":{"privileged":true,"Privileged":false,"Memory":33554432}}`},
		{"ExposedPorts given twice",
			`{"Image":"busybox:local","Cmd":["true"],"ExposedPorts":{"80/tcp":{}},"Labels":{"a":"1"},"ExposedPorts":{"81/tcp":{}},"labels":{"b":"2"},"HostConfig":{"NetworkMode":"bridge"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			straight := createRaw(t, direct, tc.body)
			proxied := createRaw(t, in.Sock, tc.body)
			a, b := inspectable(t, in, straight), inspectable(t, in, proxied)
			// What the edits set: the proxy's variables, and the names
			// for a container whose DNS is not ddinit's.
			env, _ := b["Config"].(map[string]any)["Env"].([]any)
			hosts, _ := b["HostConfig"].(map[string]any)["ExtraHosts"].([]any)
			if !strings.Contains(fmt.Sprint(env), "HTTP_PROXY=") || !strings.Contains(fmt.Sprint(hosts), "host.docker.internal:") {
				t.Fatalf("the proxy did not edit the create: Env %v, ExtraHosts %v", env, hosts)
			}
			delete(b["Config"].(map[string]any), "Env")
			delete(a["Config"].(map[string]any), "Env")
			delete(b["HostConfig"].(map[string]any), "ExtraHosts")
			delete(a["HostConfig"].(map[string]any), "ExtraHosts")
			if !reflect.DeepEqual(a, b) {
				ja, _ := json.MarshalIndent(a, "", " ")
				jb, _ := json.MarshalIndent(b, "", " ")
				t.Fatalf("straight to dockerd:\n%s\nthrough the proxy:\n%s", ja, jb)
			}
		})
	}
}

// createRaw sends body as it is (keys given twice and all) to the docker
// socket sock and returns the new container's id.
func createRaw(t *testing.T, sock, body string) string {
	t.Helper()
	code, out := harness.APIOver(t, sock, http.MethodPost, "/v1.41/containers/create", json.RawMessage(body))
	if code != http.StatusCreated {
		t.Fatalf("create through %s: %d %s", sock, code, out)
	}
	var created struct{ Id string }
	json.Unmarshal([]byte(out), &created)
	return created.Id
}

// inspectable is docker inspect of a container, less what differs
// between any two containers made from the same request.
func inspectable(t *testing.T, in *harness.Instance, id string) map[string]any {
	t.Helper()
	var got []map[string]any
	if err := json.Unmarshal([]byte(in.Docker("inspect", id)), &got); err != nil || len(got) != 1 {
		t.Fatalf("inspect %s: %v", id, err)
	}
	c := got[0]
	for _, k := range []string{"Id", "Created", "Name", "ResolvConfPath", "HostnamePath", "HostsPath", "LogPath", "GraphDriver", "NetworkSettings", "State"} {
		delete(c, k)
	}
	delete(c["Config"].(map[string]any), "Hostname")
	return c
}

package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Ping asks dockerd's /_ping through the socket sock, on a connection of
// its own.
func Ping(sock string) error {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("_ping: %s", resp.Status)
	}
	return nil
}

// WaitPing waits until docker answers _ping through the exposed socket
// and returns how long that took; ddinit exiting first, or no answer
// within timeout, fails the test.
func (in *Instance) WaitPing(timeout time.Duration) time.Duration {
	in.t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = Ping(in.Sock); err == nil {
			return time.Since(start)
		}
		select {
		case <-in.done:
			in.t.Fatalf("ddinit exited before docker answered (%v)", in.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	in.t.Fatalf("docker did not answer _ping within %s: %v", timeout, err)
	return 0
}

// Docker runs the docker CLI against the exposed socket; failing, it
// fails the test.
func (in *Instance) Docker(args ...string) string {
	in.t.Helper()
	out, err := in.DockerErr(args...)
	if err != nil {
		in.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// DockerErr runs the docker CLI against the exposed socket.
func (in *Instance) DockerErr(args ...string) (string, error) {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock, "DOCKER_CLI_HINTS=false")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Labels is the engine's labels as docker info shows them (JSON).
func (in *Instance) Labels() string {
	in.t.Helper()
	return strings.TrimSpace(in.Docker("info", "--format", "{{json .Labels}}"))
}

// ImportBusybox imports a tiny image made of the static busybox,
// busybox:local: no registry is reachable here.
func (in *Instance) ImportBusybox() {
	in.t.Helper()
	dir := in.t.TempDir()
	bin := filepath.Join(dir, "root", "bin")
	os.MkdirAll(bin, 0o755)
	bb, err := exec.LookPath("busybox")
	if err != nil {
		in.t.Fatal("busybox is missing (make deps installs busybox-static)")
	}
	b, _ := os.ReadFile(bb)
	os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755)
	for _, a := range []string{"sh", "echo", "cat", "ls", "sleep", "sync", "httpd", "nc", "mkdir", "wget", "inotifyd", "true", "touch", "wc", "tty"} {
		os.Symlink("busybox", filepath.Join(bin, a))
	}
	tarball := filepath.Join(dir, "busybox.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "root"), "-cf", tarball, ".").CombinedOutput(); err != nil {
		in.t.Fatalf("tar: %v %s", err, out)
	}
	in.Docker("import", tarball, "busybox:local")
}

// API sends one request to the docker API through the exposed socket, as
// the Windows CLI would, and returns the status and body.
func (in *Instance) API(method, path string, body any) (int, string) {
	in.t.Helper()
	return APIOver(in.t, in.Sock, method, "/v1.41"+path, body)
}

// APIOver sends one docker API request over the socket sock, on a
// connection of its own that is closed after the answer.
func APIOver(t testing.TB, sock, method, path string, body any) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://docker"+path, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// RunWith creates a busybox:local container through the API with these
// host settings, runs it to the end and returns its output.
func (in *Instance) RunWith(cmd []string, hostConfig map[string]any) string {
	in.t.Helper()
	code, body := in.API(http.MethodPost, "/containers/create", map[string]any{"Image": "busybox:local", "Cmd": cmd, "HostConfig": hostConfig})
	if code != http.StatusCreated {
		in.t.Fatalf("create with %v: %d %s", hostConfig, code, body)
	}
	var created struct{ Id string }
	json.Unmarshal([]byte(body), &created)
	in.Docker("start", created.Id)
	in.Docker("wait", created.Id)
	out, _ := in.DockerErr("logs", created.Id)
	in.Docker("rm", created.Id)
	return out
}

// Port is a container's host port for a container port, as docker says.
func (in *Instance) Port(container, spec string) string {
	in.t.Helper()
	out := strings.TrimSpace(in.Docker("port", container, spec))
	line, _, _ := strings.Cut(out, "\n")
	_, p, err := net.SplitHostPort(strings.TrimSpace(line))
	if err != nil {
		in.t.Fatalf("docker port %s %s: %q", container, spec, out)
	}
	return p
}

package e2e

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The exposed docker socket speaks for Windows: its paths reach the
// drives, a drive that is not mounted is a 400, everything else passes
// through (stdin, ptys, streams, builds, save and load), and a port taken
// in the distro fails the start as on Docker Engine.
func TestDockerAPIProxy(t *testing.T) {
	harness.RequireEnvironment(t)
	automount := filepath.Join(t.TempDir(), "host")
	os.MkdirAll(filepath.Join(automount, "x"), 0o755)
	mountTmpfsWithFile(t, filepath.Join(automount, "x"), "marker", "")
	os.MkdirAll(filepath.Join(automount, "x", "proj dir"), 0o755)
	os.WriteFile(filepath.Join(automount, "x", "proj dir", "hello.txt"), []byte("from drive X\n"), 0o644)
	in := harness.Start(t, harness.Options{Extra: []string{"--automount-root", automount}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()

	for _, src := range []string{`X:\proj dir`, `X:/proj dir`, `x:\proj dir\`, `/x/proj dir`, `//x/proj dir`} {
		if out := in.RunWith([]string{"cat", "/src/hello.txt"}, map[string]any{"Binds": []string{src + ":/src:ro"}}); out != "from drive X\n" {
			t.Errorf("-v %s:/src: the container read %q", src, out)
		}
		out := in.RunWith([]string{"sh", "-c", "cat /src/hello.txt; touch /src/w 2>/dev/null || echo read-only"},
			map[string]any{"Mounts": []map[string]any{{"Type": "bind", "Source": src, "Target": "/src", "ReadOnly": true}}})
		if out != "from drive X\nread-only\n" {
			t.Errorf("--mount type=bind,src=%s,readonly: the container printed %q", src, out)
		}
	}
	if out := in.Docker("run", "--rm", "-v", "/x/proj dir:/src", "busybox:local", "cat", "/src/hello.txt"); out != "from drive X\n" {
		t.Errorf("docker run -v /x/…: %q", out)
	}
	code, body := in.API(http.MethodPost, "/containers/create", map[string]any{"Image": "busybox:local", "HostConfig": map[string]any{"Binds": []string{`Q:\data:/d`}}})
	if code != http.StatusBadRequest || !strings.Contains(body, `Q:\\data`) || !strings.Contains(body, "drive Q:") {
		t.Errorf("an unmounted drive: %d %s", code, body)
	}
	in.Docker("run", "--rm", "-v", "proxyvol:/data", "busybox:local", "sh", "-c", "echo in-volume > /data/f")
	if out := in.Docker("run", "--rm", "-v", "proxyvol:/data", "busybox:local", "cat", "/data/f"); out != "in-volume\n" {
		t.Errorf("a named volume: %q", out)
	}

	// Pass-through.
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock, "DOCKER_CLI_HINTS=false")
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("echoed through stdin\n", "docker", "run", "-i", "--rm", "busybox:local", "cat"); out != "echoed through stdin\n" {
		t.Errorf("docker run -i: %q", out)
	}
	in.Docker("run", "-d", "--name", "pty", "busybox:local", "sleep", "300")
	if out := run("", "script", "-qec", "docker exec -it pty sh -c 'tty; echo pty-ok'", "/dev/null"); !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "pty-ok") {
		t.Errorf("docker exec -it: %q", out)
	}
	events := exec.Command("docker", "events", "--filter", "type=container", "--filter", "event=start", "--format", "{{.Actor.Attributes.name}}")
	events.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock)
	evOut, _ := events.StdoutPipe()
	events.Start()
	defer events.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	in.Docker("run", "--rm", "--name", "evented", "busybox:local", "echo")
	got := make(chan string, 1)
	go func() { b := make([]byte, 64); n, _ := evOut.Read(b); got <- string(b[:n]) }()
	select {
	case ev := <-got:
		if !strings.Contains(ev, "evented") {
			t.Errorf("docker events streamed %q", ev)
		}
	case <-time.After(10 * time.Second):
		t.Error("docker events streamed nothing")
	}

	ctx := t.TempDir()
	big := make([]byte, 100<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(ctx, "big"), big, 0o644)
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM busybox:local\nCOPY big /big\n"), 0o644)
	build := exec.Command("docker", "build", "-q", "-t", "built:1", ctx)
	build.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock, "DOCKER_BUILDKIT=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build with a 100 MB context: %v\n%s", err, out)
	}
	if out := in.Docker("run", "--rm", "built:1", "sh", "-c", "wc -c < /big"); strings.TrimSpace(out) != fmt.Sprint(len(big)) {
		t.Errorf("the built image's file: %q", out)
	}
	save := exec.Command("sh", "-c", "docker save busybox:local | docker load")
	save.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock)
	if out, err := save.CombinedOutput(); err != nil || !strings.Contains(string(out), "Loaded image") {
		t.Errorf("docker save | docker load: %v %s", err, out)
	}

	// A port something in the distro holds.
	holder, err := net.Listen("tcp", "0.0.0.0:18090")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	out, err := in.DockerErr("run", "-d", "--name", "web", "-p", "18090:80", "busybox:local", "httpd", "-f", "-p", "80")
	if err == nil || !strings.Contains(out, "18090") || !strings.Contains(out, "port is already allocated") {
		t.Errorf("docker run -p on a taken port: %v %s", err, out)
	}
	if running := strings.TrimSpace(in.Docker("inspect", "-f", "{{.State.Running}}", "web")); running != "false" {
		t.Errorf("the container runs although its port is taken: %s", running)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := holder.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.DialTimeout("tcp", "127.0.0.1:18090", 2*time.Second)
	if err != nil {
		t.Fatalf("the port's owner lost it: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("the port's owner did not get the connection: %v", err)
	}
	in.Docker("rm", "-f", "web", "pty")
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

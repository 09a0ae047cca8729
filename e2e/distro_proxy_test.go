package e2e

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/mounts"
	"golang.org/x/sys/unix"
)

// userDistro plays another WSL distro: a mount namespace of its own in
// which the shared tmpfs stays a peer (unshare -m alone would make it
// private), with its own /home, /tmp and /run; with chroot set, its root
// is that folder (the shared tmpfs bound at the same path in it).
type userDistro struct {
	t      *testing.T
	name   string
	pid    int
	chroot string
}

func newUserDistro(t *testing.T, name string) *userDistro {
	return newDistro(t, name, "", "")
}

// newDistro starts a distro whose namespace setup runs setup (a shell
// script, as root, after its own /home, /tmp and /run are mounted) and
// whose commands run chrooted into chroot when it is set.
func newDistro(t *testing.T, name, setup, chroot string) *userDistro {
	t.Helper()
	base := "mount -t tmpfs home /home && mount -t tmpfs tmp /tmp && mount -t tmpfs run /run && mkdir -p /home/user"
	if chroot != "" {
		base = "true"
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "unchanged", "sh", "-c",
		base+" && "+orTrue(setup)+" && echo ready && exec sleep 3600")
	out, _ := cmd.StdoutPipe()
	var stderr harness.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	b := make([]byte, 6)
	if _, err := io.ReadFull(out, b); err != nil || string(b) != "ready\n" {
		t.Fatalf("the user distro did not start: %q %v\n%s", b, err, stderr.String())
	}
	return &userDistro{t: t, name: name, pid: cmd.Process.Pid, chroot: chroot}
}

func orTrue(script string) string {
	if script == "" {
		return "true"
	}
	return "{ " + script + "\n}"
}

// command runs argv inside the distro, as root unless wrapped.
func (d *userDistro) command(argv ...string) *exec.Cmd {
	if d.chroot != "" {
		argv = append([]string{"chroot", d.chroot}, argv...)
	}
	cmd := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(d.pid), "-m", "--"}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/home/user", "DOCKER_CLI_HINTS=false"}
	return cmd
}

// sh runs a shell command in the distro and fails the test if it fails.
func (d *userDistro) sh(script string) string {
	d.t.Helper()
	out, err := d.command("sh", "-c", script).CombinedOutput()
	if err != nil {
		d.t.Fatalf("in %s: %s: %v\n%s", d.name, script, err, out)
	}
	return string(out)
}

func (d *userDistro) shErr(script string) (string, error) {
	out, err := d.command("sh", "-c", script).CombinedOutput()
	return string(out), err
}

// startProxy runs `ddinit proxy` in the distro from the copy ddinit put
// in the shared tmpfs, and waits for the distro's docker socket.
func (d *userDistro) startProxy(shared string, extra ...string) func() {
	d.t.Helper()
	bin := filepath.Join(shared, "docker-desktop", "ddinit")
	if staticBinary(d.t) {
		// ddinit publishes it once its boot has settled.
		within(d.t, 10*time.Second, "ddinit's copy in the shared tmpfs", func() bool { return exists(bin) })
	} else {
		// A dynamic build (-race) publishes no copy: the distros here
		// share the machine's libraries, so the build itself runs.
		bin = visibleBinary(d.t, shared)
	}
	stop, _ := d.runProxy(bin, shared, true, extra...)
	return stop
}

// runProxy runs `ddinit proxy` from bin in the distro; with waitEngine it
// returns once docker answers through the distro's socket, else once the
// socket is there. It returns how to stop it and its pid.
func (d *userDistro) runProxy(bin, shared string, waitEngine bool, extra ...string) (func(), int) {
	d.t.Helper()
	var log harness.SyncBuffer
	cmd := d.command(append([]string{bin, "proxy", "--distro", d.name, "--wsl-shared", shared, "--log-level", "debug"}, extra...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	d.t.Cleanup(func() {
		stop()
		if d.t.Failed() {
			d.t.Logf("ddinit proxy in %s:\n%s", d.name, harness.Tail(log.String(), 40))
		}
	})
	var last string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if waitEngine {
			out, err := d.shErr("docker version")
			if err == nil {
				break
			}
			last = fmt.Sprintf("docker version: %v\n%s", err, out)
		} else if exists(fmt.Sprintf("/proc/%d/root/run/docker.sock", d.pid)) {
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("the distro's docker socket does not answer: %s\nthe proxy's log:\n%s", last, log.String())
		}
	}
	// nsenter execs the proxy: the pid is the proxy's.
	return stop, cmd.Process.Pid
}

// bindsLeft lists the mounts under the shared tmpfs's binds folder.
func bindsLeft(t *testing.T, shared string) []string {
	table, err := mounts.ReadMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range table {
		if strings.HasPrefix(m.Point, filepath.Join(shared, "docker-desktop-bind-mounts")+"/") {
			out = append(out, m.Point+" from "+m.Root)
		}
	}
	return out
}

// From a user's distro, with `ddinit proxy` serving its docker socket,
// the docker CLI and docker-compose bind the distro's own files; the
// binds last as long as their containers, come back after WSL restarts,
// and Windows reaches a distro's files through \\wsl$.
func TestDistroProxy(t *testing.T) {
	harness.RequireEnvironment(t)
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatal("docker-compose is missing (make deps installs it)")
	}
	docker, err := user.LookupGroup("docker")
	if err != nil {
		t.Fatal("the distro has no docker group (make deps installs docker.io, which makes it)")
	}
	shared := newShared(t)
	data, _ := harness.NewDirs(t)
	in := harness.Start(t, harness.Options{DataDir: data, Extra: []string{"--wsl-shared", shared}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	distro := newUserDistro(t, "Ubuntu")
	distro.sh(`mkdir -p ~/project/src "/home/user/my dir é" /tmp/x && echo hello > ~/project/hello.txt && echo readme > ~/project/readme.txt && echo spaced > "/home/user/my dir é/f" && echo tmp > /tmp/x/f && echo compose > ~/project/src/hello.txt`)
	stopProxy := distro.startProxy(shared)

	if st, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/docker.sock", distro.pid)); err != nil || st.Mode().Perm() != 0o660 || int(st.Sys().(*syscall.Stat_t).Gid) != atoi(docker.Gid) {
		t.Fatalf("the distro's docker socket: %v %v", st, err)
	}
	if out := distro.sh(`docker run --rm -v ~/project:/src busybox:local sh -c 'ls /src; echo written > /src/from-container'`); !strings.Contains(out, "hello.txt") || !strings.Contains(out, "readme.txt") {
		t.Fatalf("docker run -v ~/project:/src lists %q", out)
	}
	if out := distro.sh(`cat ~/project/from-container`); out != "written\n" {
		t.Fatalf("the container's file in the distro: %q", out)
	}
	if out := distro.sh(`docker run --rm --mount type=bind,src=/home/user/project/readme.txt,dst=/r.txt,readonly busybox:local sh -c 'cat /r.txt; (echo x > /r.txt) 2>/dev/null || echo read-only'`); out != "readme\nread-only\n" {
		t.Fatalf("--mount of one file, read-only: %q", out)
	}
	if out := distro.sh(`docker run --rm -v "/home/user/my dir é:/d" -v /tmp/x:/x busybox:local cat /d/f /x/f`); out != "spaced\ntmp\n" {
		t.Fatalf("a path with a space and é, and the distro's /tmp: %q", out)
	}
	if out, err := distro.shErr(`docker run --rm --mount type=bind,src=/home/user/nope,dst=/n busybox:local true`); err == nil || !strings.Contains(out, "/home/user/nope") {
		t.Fatalf("--mount of a missing path: %v %q", err, out)
	}
	// A container with the distro's docker socket, whose own client binds
	// a path of the distro.
	cli, _ := exec.LookPath("docker")
	distro.sh(fmt.Sprintf(`mkdir -p /tmp/img/bin && cp %s /tmp/img/bin/docker && cp /bin/busybox /tmp/img/bin/ && ln -s busybox /tmp/img/bin/sh && tar -C /tmp/img -c . | docker import - dockercli:local`, cli))
	if out := distro.sh(`docker run --rm -v /var/run/docker.sock:/var/run/docker.sock dockercli:local docker run --rm -v /home/user/project:/q busybox:local cat /q/hello.txt`); out != "hello\n" {
		t.Fatalf("a client inside a container, through the distro's socket: %q", out)
	}

	// inotify events reach the container.
	watcher := filepath.Join(filepath.Dir(shared), "inotify")
	build := exec.Command("go", "build", "-o", watcher, "./testdata/inotify")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the watcher: %v %s", err, out)
	}
	distro.sh(`docker create --name ino -v ~/project:/src busybox:local /inotify /src && docker cp ` + watcher + ` ino:/inotify && docker start ino`)
	within(t, 5*time.Second, "the watcher started", func() bool {
		out, _ := distro.shErr(`docker logs ino`)
		return strings.Contains(out, "watching")
	})
	distro.sh(`touch ~/project/touched-in-the-distro`)
	within(t, 5*time.Second, "the inotify event in the container", func() bool {
		out, _ := distro.shErr(`docker logs ino`)
		return strings.Contains(out, "touched-in-the-distro")
	})
	distro.sh(`docker rm -f ino`)

	// The docker group, and others.
	gid := docker.Gid
	if out, err := distro.command("setpriv", "--reuid", "4242", "--regid", "4242", "--groups", gid, "docker", "ps").CombinedOutput(); err != nil {
		t.Fatalf("a member of the docker group: %v %s", err, out)
	}
	if out, err := distro.command("setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups", "docker", "ps").CombinedOutput(); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("a user outside the docker group: %v %s", err, out)
	}

	// docker-compose with a relative bind and a named volume.
	distro.sh(`cat > ~/project/docker-compose.yml <<'EOF'
version: "2.4"
services:
  app:
    image: busybox:local
    command: ["sh", "-c", "cat /src/hello.txt > /data/copy; exec sleep 3600"]
    volumes:
      - ./src:/src
      - appdata:/data
volumes:
  appdata: {}
EOF`)
	distro.sh(`cd ~/project && docker-compose up -d`)
	within(t, 20*time.Second, "compose's container reads its bind", func() bool {
		out, _ := distro.shErr(`cd ~/project && docker-compose exec -T app cat /data/copy`)
		return out == "compose\n"
	})
	distro.sh(`cd ~/project && docker-compose down -v`)

	// From Windows: \\wsl$\<distro>\… through the exposed socket.
	if out := in.RunWith([]string{"cat", "/w/hello.txt"}, map[string]any{"Binds": []string{`\\wsl$\Ubuntu\home\user\project:/w:ro`}}); out != "hello\n" {
		t.Fatalf(`\\wsl$\Ubuntu\home\user\project from Windows: %q`, out)
	}
	code, body := in.API(http.MethodPost, "/containers/create", map[string]any{"Image": "busybox:local", "HostConfig": map[string]any{"Binds": []string{`\\wsl.localhost\Nope\x:/y`}}})
	if code != http.StatusBadRequest || !strings.Contains(body, "Nope") {
		t.Fatalf("an unknown distro: %d %s", code, body)
	}
	within(t, 5*time.Second, "no binds of the proxy left", func() bool { return len(bindsLeft(t, shared)) == 0 })

	// WSL restarts: ddinit and the proxy stop, the shared tmpfs is empty
	// again, ddinit boots before the proxy does.
	distro.sh(`docker run -d --restart always --name keeper -v ~/project:/src busybox:local sh -c 'if [ -e /src/hello.txt ]; then echo sees-files; else echo EMPTY; fi; exec sleep 3600'`)
	stopProxy()
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, m := range bindsLeft(t, shared) {
		unix.Unmount(strings.Fields(m)[0], unix.MNT_DETACH)
	}
	entries, _ := os.ReadDir(shared)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(shared, e.Name()))
	}
	again := harness.Start(t, harness.Options{DataDir: data, Extra: []string{"--wsl-shared", shared}})
	again.WaitPing(60 * time.Second)
	time.Sleep(time.Second)
	var state struct{ State struct{ Running bool } }
	json.Unmarshal([]byte(again.Docker("inspect", "--format", "{{json .}}", "keeper")), &state)
	if logs, _ := again.DockerErr("logs", "keeper"); state.State.Running || strings.Contains(logs, "EMPTY") {
		t.Fatalf("before its distro's proxy, the container runs (%v) or ran on an empty directory: %q", state.State.Running, logs)
	}
	distro.startProxy(shared)
	within(t, 20*time.Second, "the container started once the proxy made its binds again", func() bool {
		logs, _ := again.DockerErr("logs", "keeper")
		return strings.Count(logs, "sees-files") == 2
	})
	if logs, _ := again.DockerErr("logs", "keeper"); strings.Contains(logs, "EMPTY") {
		t.Fatalf("the container ran on an empty directory: %q", logs)
	}
	again.Docker("rm", "-f", "keeper")
	within(t, 5*time.Second, "no binds of the proxy left", func() bool { return len(bindsLeft(t, shared)) == 0 })
	if code, _ := again.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func atoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// staticBinary reports whether the ddinit under test needs no dynamic
// loader (make build's does; the -race build does not).
func staticBinary(t *testing.T) bool {
	f, err := elf.Open(harness.Binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// visibleBinary is the ddinit under test copied beside the shared tmpfs,
// where every user distro sees it: the build may be under /tmp (a CI
// checkout), which each distro has its own of.
func visibleBinary(t *testing.T, shared string) string {
	t.Helper()
	dst := filepath.Join(filepath.Dir(shared), "ddinit-under-test")
	if exists(dst) {
		return dst
	}
	b, err := os.ReadFile(harness.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

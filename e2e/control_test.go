package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// /ping is 503 while booting and while dockerd restarts, 200 otherwise;
// status, logs, restart, diagnostics and shutdown work through the API
// and the CLI.
func TestControlAPI(t *testing.T) {
	harness.RequireEnvironment(t)
	pack := harness.CustomPack(t, func(root string) {
		harness.AddService(t, root, "chatty", []string{"/bin/sh", "-c", "echo password=hunter2 token: s3cr3t-t0ken; while true; do echo tick; sleep 0.2; done"},
			map[string]string{"io.ddinit.service.required": "false"})
	})
	in := harness.Start(t, harness.Options{Pack: pack})

	// Booting: the API answers before the services are up.
	var sawBooting bool
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		code, body := in.Get(http.MethodGet, "/ping")
		if code == 503 {
			sawBooting = true
			if !strings.Contains(body, "booting") && !strings.Contains(body, "dockerd") {
				t.Fatalf("503 without a reason: %q", body)
			}
		}
		if code == 200 {
			break
		}
	}
	if !sawBooting {
		t.Fatal("/ping never answered 503 during the boot")
	}
	if st, err := os.Stat(in.ControlSock()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode: %v %v", st.Mode(), err)
	}
	if err := harness.Ping(in.Sock); err != nil {
		t.Fatalf("/ping said 200 but docker does not answer: %v", err)
	}
	st := in.Status()
	if st.State != "running" || !st.Ready || len(st.Phases) < 4 || len(st.Images) != 2 || len(st.Components) < 5 || st.HostPID == 0 || len(st.Mounts) == 0 {
		t.Fatalf("status is missing parts: %+v", st)
	}

	// kill -9 dockerd: 503 while it is down, then 200; status tells.
	ns := in.PidNS()
	pid := harness.FindComm(ns, "dockerd")[0]
	syscall.Kill(pid, syscall.SIGKILL)
	var saw503 bool
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		code, body := in.Get(http.MethodGet, "/ping")
		if code == 503 && strings.Contains(body, "dockerd") {
			saw503 = true
		}
		if code == 200 && saw503 {
			break
		}
	}
	if !saw503 {
		t.Fatal("/ping stayed 200 while dockerd was down")
	}
	out, err := in.CLI("status")
	if err != nil {
		t.Fatalf("ddinit status: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "dockerd ") {
			line = l
		}
	}
	// SERVICE STATE READY RUNTIME PID DISTRO-PID RESTARTS LAST-EXIT…
	if f := strings.Fields(line); len(f) < 8 || f[6] != "1" || !strings.Contains(line, "SIGKILL") {
		t.Fatalf("ddinit status does not show one restart and the SIGKILL:\n%s", out)
	}

	// enter: a command inside the namespace, and inside a service's.
	out, err = in.CLI("enter", "--", "/bin/cat", "/etc/hostname", "/etc/os-release")
	if err != nil || !strings.Contains(out, "docker-desktop") || !strings.Contains(out, "ddinit base") {
		t.Fatalf("ddinit enter: %v\n%s", err, out)
	}
	out, err = in.CLI("enter", "dockerd", "--", "/bin/sh", "-c", "echo $$; ls /run/docker.sock")
	if err != nil || !strings.Contains(out, "/run/docker.sock") {
		t.Fatalf("ddinit enter dockerd: %v\n%s", err, out)
	}

	// Logs: a tail, then following new lines.
	out, err = in.CLI("logs", "-n", "5", "chatty")
	if err != nil || !strings.Contains(out, "tick") {
		t.Fatalf("ddinit logs chatty: %v\n%s", err, out)
	}
	c, _ := control.NewClient("unix://"+in.ControlSock(), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	resp, err := c.Do(ctx, http.MethodGet, "/logs?service=chatty&tail=0&follow=1", true)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(resp.Body)
	var followed int
	for followed < 3 {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("following logs: %v after %d lines", err, followed)
		}
		if strings.Contains(l, "tick") {
			followed++
		}
	}
	cancel()
	resp.Body.Close()

	// Restart through the CLI.
	before := in.Status()
	if out, err := in.CLI("restart", "chatty"); err != nil {
		t.Fatalf("ddinit restart: %v %s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if svc := serviceStatus(in.Status(), "chatty"); svc.Restarts == serviceStatus(before, "chatty").Restarts+1 && svc.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatty was not restarted: %+v", serviceStatus(in.Status(), "chatty"))
		}
	}
	if code, _ := in.Get(http.MethodPost, "/services/nosuch/restart"); code != 404 {
		t.Fatalf("restart of an unknown service: %d", code)
	}

	// Diagnostics: the archive has what it promises and no secrets.
	diag := filepath.Join(t.TempDir(), "d.tar.gz")
	if out, err := in.CLI("diagnose", "-o", diag); err != nil {
		t.Fatalf("ddinit diagnose: %v %s", err, out)
	}
	files := readTarGz(t, diag)
	for _, want := range []string{"status.json", "logs/ddinit.log", "logs/dockerd.log", "logs/chatty.log", "mountinfo", "processes.txt", "network/dev", "kernel.log"} {
		if _, ok := files["ddinit-diagnostics/"+want]; !ok {
			t.Errorf("diagnostics lack %s", want)
		}
	}
	all := ""
	for _, b := range files {
		all += b
	}
	if strings.Contains(all, "hunter2") || strings.Contains(all, "s3cr3t-t0ken") {
		t.Fatal("diagnostics carry a secret")
	}
	if !strings.Contains(files["ddinit-diagnostics/logs/chatty.log"], "<redacted>") {
		t.Fatal("the secret line was dropped instead of redacted")
	}

	// Shutdown through the API.
	if code, _ := in.Get(http.MethodPost, "/shutdown"); code != 202 {
		t.Fatalf("/shutdown: %d", code)
	}
	if code := in.Exited(90 * time.Second); code != 0 {
		t.Fatalf("exit %d after /shutdown", code)
	}
	if _, err := os.Stat(in.ControlSock()); err == nil {
		t.Fatal("the control socket was left behind")
	}
}

func serviceStatus(st control.Status, name string) control.ServiceStatus {
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	return control.ServiceStatus{}
}

func readTarGz(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = string(b)
	}
}

// fdCount is how many file descriptors a process holds.
func fdCount(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries)
}

// Docker through the forwarded socket under real use and abuse.
func TestForwardedDockerSocket(t *testing.T) {
	harness.RequireEnvironment(t)
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	outer, pid1 := in.Pid(), in.Pid1()

	// docker logs -f follows a container's output through the hop.
	id := strings.TrimSpace(in.Docker("run", "-d", "busybox:local", "sh", "-c", "for i in 1 2 3 4 5; do echo line-$i; sleep 0.2; done"))
	logs := in.Docker("logs", "-f", id)
	for i := 1; i <= 5; i++ {
		if !strings.Contains(logs, fmt.Sprintf("line-%d", i)) {
			t.Fatalf("docker logs -f: %q", logs)
		}
	}
	in.Docker("rm", id)

	// docker cp of 256 MB in and out, sha256 intact.
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	f, _ := os.Create(big)
	h := sha256.New()
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 1<<20)
	for i := 0; i < 256; i++ {
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		f.Write(buf)
		h.Write(buf)
	}
	f.Close()
	want := hex.EncodeToString(h.Sum(nil))
	id = strings.TrimSpace(in.Docker("create", "busybox:local", "sleep", "60"))
	in.Docker("cp", big, id+":/big.bin")
	back := filepath.Join(dir, "back.bin")
	in.Docker("cp", id+":/big.bin", back)
	in.Docker("rm", "-f", id)
	got, err := fileSHA256(back)
	if err != nil || got != want {
		t.Fatalf("docker cp round trip: sha256 %s, want %s (%v)", got, want, err)
	}

	// The baseline for the leak check: after real use, before the abuse.
	time.Sleep(500 * time.Millisecond)
	fdsOuter, fdsPID1, goroutines := fdCount(outer), fdCount(pid1), in.Status().Goroutines

	// 500 concurrent connections, each a full HTTP exchange.
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pingRaw(in.Sock, false)
		}()
	}
	wg.Wait()
	close(errs)
	var failed int
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 500 concurrent connections failed", failed)
	}
	// Clients that half-close after their request still get the answer.
	for i := 0; i < 20; i++ {
		if err := pingRaw(in.Sock, true); err != nil {
			t.Fatalf("half-closing client: %v", err)
		}
	}
	// Clients that vanish mid-stream.
	for i := 0; i < 50; i++ {
		c, err := net.Dial("unix", in.Sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("GET /v1.41/events HTTP/1.1\r\nHost: docker\r\n\r\n"))
		if i%2 == 0 {
			// Some wait for the stream to start before vanishing.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			c.Read(make([]byte, 64))
		}
		c.Close()
	}
	// Garbage and a 1 MB header on the control socket get a 4xx.
	for _, payload := range [][]byte{
		[]byte("\x00\x01garbage that is not HTTP\r\n\r\n"),
		append(append([]byte("GET /status HTTP/1.1\r\nHost: x\r\nX-Big: "), []byte(strings.Repeat("a", 1<<20))...), []byte("\r\n\r\n")...),
	} {
		c, err := net.Dial("unix", in.ControlSock())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go c.Write(payload)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "HTTP/1.1 4") {
			t.Fatalf("hostile request answered %q", line)
		}
	}
	if err := harness.Ping(in.Sock); err != nil {
		t.Fatalf("docker stopped answering after the abuse: %v", err)
	}
	// Nothing leaked: descriptors and goroutines settle back.
	var lastFds, lastFds1, lastG int
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		lastFds, lastFds1, lastG = fdCount(outer), fdCount(pid1), in.Status().Goroutines
		if lastFds <= fdsOuter && lastFds1 <= fdsPID1 && lastG <= goroutines+2 {
			return
		}
	}
	t.Fatalf("leak: ddinit run fds %d -> %d, PID 1 fds %d -> %d, goroutines %d -> %d", fdsOuter, lastFds, fdsPID1, lastFds1, goroutines, lastG)
}

func pingRaw(sock string, halfClose bool) error {
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	if halfClose {
		c.(*net.UnixConn).CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") || !strings.HasSuffix(string(b), "OK") {
		return fmt.Errorf("answer %q", b)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

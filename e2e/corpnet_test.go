package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The corporate network's parts, in the test distro's network: a TLS
// registry with a certificate from a company CA, on the distro's loopback
// (so the engine cannot reach it but through the proxy), named only in the
// proxy's own /etc/hosts; and tinyproxy on the distro's loopback, admitting
// loopback clients only.
const (
	corpRegistryName = "registry.corp"
	corpRegistryAddr = "127.0.0.66:5443"
	corpProxyPort    = "18128"
)

// tinyproxy runs tinyproxy in the distro's network namespace, in a mount
// namespace of its own where /etc/hosts names the registry; it returns
// the path of its log.
func tinyproxy(t *testing.T, w *harness.DNSWorld) string {
	t.Helper()
	if _, err := exec.LookPath("tinyproxy"); err != nil {
		t.Fatal("tinyproxy is missing (make deps installs tinyproxy-bin)")
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "tinyproxy.log")
	conf := filepath.Join(dir, "tinyproxy.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("Port %s\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nConnectPort 5443\nLogLevel Connect\nLogFile %q\nMaxClients 40\n", corpProxyPort, logFile)), 0o644)
	hosts := filepath.Join(dir, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+strings.Split(corpRegistryAddr, ":")[0]+" "+corpRegistryName+"\n"), 0o644)
	// unshare(1) gives the new mount namespace private propagation: the
	// bind over /etc/hosts is the proxy's alone.
	cmd := exec.Command("nsenter", "--net="+w.Distro, "unshare", "--mount", "sh", "-c",
		fmt.Sprintf("mount --bind %q /etc/hosts && exec tinyproxy -d -c %q", hosts, conf))
	out := &harness.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	within(t, 10*time.Second, "tinyproxy to listen", func() bool {
		var ok bool
		w.In(w.Distro, func() {
			c, err := netDialTimeout("tcp", "127.0.0.1:"+corpProxyPort)
			if ok = err == nil; ok {
				c.Close()
			}
		})
		return ok
	})
	return logFile
}

// Behind a corporate proxy with a company CA: nothing reaches the
// registry until one settings change gives the engine the proxy (on the
// distro's loopback) and the CA; then pushes and pulls work, with no
// restart of anything but dockerd; new containers (through the exposed
// socket and a distro's proxy) and builds (both builders) get the proxy;
// removing the CA refuses the registry again.
func TestCorporateProxyAndCA(t *testing.T) {
	harness.RequireEnvironment(t)
	if _, err := user.LookupGroup("docker"); err != nil {
		t.Fatal("the distro has no docker group (make deps installs docker.io, which makes it)")
	}
	w := harness.NewDNSWorld(t)
	// Names nobody here knows are NXDOMAIN, asked of nothing beyond the machine.
	w.Dnsmasq("127.0.0.53", "--address=/#/")
	resolv := harness.ResolverFile(t, "127.0.0.53")
	ca, cert, key := testCAFor(t, corpRegistryName, "DNS:"+corpRegistryName)
	startRegistryAt(t, t.TempDir(), corpRegistryAddr, w, ca, cert, key, "")
	proxyLog := tinyproxy(t, w)

	shared := newShared(t)
	in := harness.Start(t, harness.Options{Netns: w.Distro, Extra: []string{"--resolv-conf", resolv, "--wsl-shared", shared}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	image := corpRegistryName + ":5443/e2e/busybox:1"
	in.Docker("tag", "busybox:local", image)
	in.Docker("run", "-d", "--name", "before", "busybox:local", "sleep", "3600")
	startedBefore := strings.TrimSpace(in.Docker("inspect", "-f", "{{.State.StartedAt}}", "before"))
	pid1 := in.Pid1()

	if out, err := in.DockerErr("push", image); err == nil {
		t.Fatalf("a push reached the registry without the proxy:\n%s", out)
	}
	proxy := fmt.Sprintf(`"proxy": {"http": "http://127.0.0.1:%[1]s", "https": "http://127.0.0.1:%[1]s", "noProxy": "corp.example"}`, corpProxyPort)
	if code, body := in.PutSettings(`{"generation": 0, ` + proxy + `}`); code != 200 {
		t.Fatalf("the proxy setting: %d %s", code, body)
	}
	if out, err := in.DockerErr("push", image); err == nil || !strings.Contains(out, "x509") || !strings.Contains(out, "unknown authority") {
		t.Fatalf("a push through the proxy without the company CA: %v\n%s", err, out)
	}
	caPEM, _ := os.ReadFile(ca)
	caJSON, _ := json.Marshal(string(caPEM))
	if code, body := in.PutSettings(`{"generation": 1, ` + proxy + `, "trustedCAs": [` + string(caJSON) + `]}`); code != 200 {
		t.Fatalf("the CA setting: %d %s", code, body)
	}
	in.Docker("push", image)
	in.Docker("rmi", image)
	in.Docker("pull", image)
	if b, _ := os.ReadFile(proxyLog); !strings.Contains(string(b), "CONNECT") || !strings.Contains(string(b), corpRegistryName) {
		t.Fatalf("the proxy's log shows no CONNECT to the registry:\n%s", b)
	}
	// The registry was trusted through the CA, never by marking it
	// insecure: only the engine's own loopback defaults are listed (20.10
	// lists 127.0.0.0/8; 28 adds ::1/128).
	var insecure []string
	if out := in.Docker("info", "--format", "{{json .RegistryConfig.InsecureRegistryCIDRs}}"); json.Unmarshal([]byte(out), &insecure) != nil {
		t.Fatalf("insecure registries: %s", out)
	}
	for _, cidr := range insecure {
		if cidr != "127.0.0.0/8" && cidr != "::1/128" {
			t.Fatalf("insecure registries beyond loopback: %v", insecure)
		}
	}
	if now := strings.TrimSpace(in.Docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", "before")); now != "true "+startedBefore {
		t.Fatalf("the container from before the change: %s (started %s)", now, startedBefore)
	}
	if in.Pid1() != pid1 {
		t.Fatal("PID 1 was restarted")
	}

	// New containers get the proxy, as containers reach it; their own
	// values (empty: opting out) are kept.
	relayed := "http://100.64.249.2:" + corpProxyPort
	env := in.Docker("run", "--rm", "busybox:local", "sh", "-c", "env")
	for _, want := range []string{"HTTP_PROXY=" + relayed, "http_proxy=" + relayed, "HTTPS_PROXY=" + relayed, "no_proxy=localhost,127.0.0.0/8,::1,100.64.249.0/30,host.docker.internal,gateway.docker.internal,corp.example"} {
		if !strings.Contains(env, want+"\n") {
			t.Fatalf("a new container's environment lacks %s:\n%s", want, env)
		}
	}
	env = in.Docker("run", "--rm", "-e", "HTTP_PROXY=", "-e", "https_proxy=http://mine:1", "busybox:local", "sh", "-c", "env")
	if !strings.Contains(env, "HTTP_PROXY=\n") || strings.Contains(env, "http_proxy=") || !strings.Contains(env, "https_proxy=http://mine:1") || strings.Contains(env, "HTTPS_PROXY=") {
		t.Fatalf("a container's own proxy variables were not kept:\n%s", env)
	}
	distro := newUserDistro(t, "Ubuntu")
	distro.startProxy(shared)
	if env := distro.sh("docker run --rm busybox:local sh -c env"); !strings.Contains(env, "HTTPS_PROXY="+relayed+"\n") {
		t.Fatalf("a container created through a distro's proxy lacks the proxy:\n%s", env)
	}

	// Builds get the proxy as build arguments, with both builders.
	ctx := t.TempDir()
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM busybox:local\nRUN env\n"), 0o644)
	// Debian's CLI (make deps installs it) builds with BuildKit itself; a
	// newer one found first on PATH would want the buildx plugin.
	cli := "docker"
	if exists("/usr/bin/docker") {
		cli = "/usr/bin/docker"
	}
	for _, buildkit := range []string{"0", "1"} {
		cmd := exec.Command(cli, "build", "--no-cache", "--progress=plain", ctx)
		if buildkit == "0" {
			cmd = exec.Command(cli, "build", "--no-cache", ctx)
		}
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock, "DOCKER_BUILDKIT="+buildkit, "DOCKER_CLI_HINTS=false")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "HTTP_PROXY="+relayed) || !strings.Contains(string(out), "http_proxy="+relayed) {
			t.Fatalf("a build with DOCKER_BUILDKIT=%s: %v\n%s", buildkit, err, out)
		}
	}

	// The CA removed: the registry is refused again.
	in.Docker("rmi", image)
	if code, body := in.PutSettings(`{"generation": 2, "trustedCAs": []}`); code != 200 {
		t.Fatalf("removing the CA: %d %s", code, body)
	}
	if out, err := in.DockerErr("pull", image); err == nil || !strings.Contains(out, "unknown authority") {
		t.Fatalf("a pull after the CA was removed: %v\n%s", err, out)
	}
}

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/e2e/harness"
)

// The docker CLI the tools image carries, as packs/versions.env pins it.
var toolsCLIVersion = pinnedTool("DOCKER_CLI_VERSION")

func pinnedTool(key string) string {
	b, _ := os.ReadFile(filepath.Join(harness.RepoRoot, "packs", "versions.env"))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return v
		}
	}
	return ""
}

// noDockerSetup makes a distro on this machine's root look like a fresh
// Ubuntu: /usr writable for it alone (an overlay whose changes stay in
// its own /run) and no docker CLI installed, whatever the test machine has.
const noDockerSetup = `mkdir -p /run/.usr/upper /run/.usr/work &&
mount -t overlay usr -o lowerdir=/usr,upperdir=/run/.usr/upper,workdir=/run/.usr/work /usr &&
rm -f /usr/bin/docker /usr/local/bin/docker /usr/share/bash-completion/completions/docker /usr/share/fish/vendor_completions.d/docker.fish &&
rm -rf /usr/libexec/docker /usr/lib/docker /usr/local/lib/docker`

// newFreshDistro is a distro on this machine's root without a docker of
// its own; more runs after noDockerSetup (the user's own tools).
func newFreshDistro(t *testing.T, name, more string) *userDistro {
	setup := noDockerSetup
	if more != "" {
		setup += " && " + more
	}
	return newDistro(t, name, setup, "")
}

// newBusyboxDistro is a distro whose root holds a static busybox and
// nothing else (no musl root is at hand offline; static binaries are what
// matters), entered with chroot; the shared tmpfs is bound at the same
// path in it, a peer as in every WSL distro.
func newBusyboxDistro(t *testing.T, name, shared string) *userDistro {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is missing (make deps installs busybox-static)")
	}
	root, err := os.MkdirTemp("/var/tmp", "ddinit-bb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "home/user", "root", "tmp", "run", "proc", "dev", "sys", "var"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.Symlink("../run", filepath.Join(root, "var/run"))
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	if b, err := exec.Command("cp", "-L", busybox, filepath.Join(root, "bin/busybox")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	if b, err := exec.Command("chroot", root, "/bin/busybox", "--install", "-s", "/bin").CombinedOutput(); err != nil {
		t.Fatalf("busybox --install: %v %s", err, b)
	}
	// The shared tmpfs with what is mounted in it already (the CLI tools'
	// offer), as WSL gives a distro that starts late.
	setup := fmt.Sprintf(`mount -t proc proc %[1]s/proc && mount --rbind /dev %[1]s/dev &&
mount -t tmpfs tmp %[1]s/tmp && mount -t tmpfs run %[1]s/run && mount -t tmpfs home %[1]s/home && mkdir -p %[1]s/home/user &&
mkdir -p %[1]s%[2]s && mount --rbind %[2]s %[1]s%[2]s`, root, shared)
	return newDistro(t, name, setup, root)
}

// startToolsProxy runs the distro's proxy from the copy in the shared
// tmpfs and waits until docker answers there through the CLI tools' links.
func (d *userDistro) startToolsProxy(shared string, extra ...string) func() {
	d.t.Helper()
	bin := filepath.Join(shared, "docker-desktop", "ddinit")
	within(d.t, 20*time.Second, "ddinit's copy and the CLI tools in the shared tmpfs", func() bool {
		return exists(bin) && exists(filepath.Join(shared, config.SharedCLITools, clitools.Current, "bin/docker"))
	})
	stop, _ := d.runProxy(bin, shared, true, extra...)
	return stop
}

// toolsWorld is ddinit offering the CLI tools in a shared tmpfs.
func toolsWorld(t *testing.T, extra ...string) (*harness.Instance, string) {
	t.Helper()
	harness.RequireEnvironment(t)
	if !staticBinary(t) {
		t.Skip("the distros run ddinit's copy in the shared tmpfs, which only a static build publishes (make build's is; this one is not)")
	}
	shared := newShared(t)
	in := harness.Start(t, harness.Options{CLITools: harness.CLIToolsISO, Extra: append([]string{"--wsl-shared", shared}, extra...)})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	return in, shared
}

// A fresh Ubuntu-like distro and a busybox-only one each get the docker
// CLI 29 with compose and buildx from ddinit: docker version shows both
// ends, and a compose project with a relative bind, a build with a build
// secret and a published port works.
func TestCLIToolsInEveryDistro(t *testing.T) {
	in, shared := toolsWorld(t)
	server := strings.TrimSpace(in.Docker("version", "--format", "{{.Server.Version}}"))
	for i, d := range []*userDistro{newFreshDistro(t, "Ubuntu", ""), newBusyboxDistro(t, "Alpine", shared)} {
		t.Run(d.name, func(t *testing.T) {
			d.t = t
			d.startToolsProxy(shared)
			if out := d.sh(`docker version --format '{{.Client.Version}} {{.Server.Version}}'`); out != toolsCLIVersion+" "+server+"\n" {
				t.Fatalf("docker version: %q, want client %s and server %s", out, toolsCLIVersion, server)
			}
			if out := d.sh(`docker buildx version`); !strings.Contains(out, "github.com/docker/buildx") {
				t.Fatalf("docker buildx version: %q", out)
			}
			port := fmt.Sprint(18460 + i)
			d.sh(`mkdir -p ~/proj/site && cd ~/proj && echo served-from-` + d.name + ` > site/index.html && echo s3cret > token.txt &&
printf 'FROM busybox:local\nRUN --mount=type=secret,id=token cp /run/secrets/token /token-copy\n' > Dockerfile &&
cat > compose.yaml <<'EOF'
services:
  web:
    build:
      context: .
      secrets: [token]
    image: clitools-web-` + strings.ToLower(d.name) + `:1
    ports: ["` + port + `:80"]
    volumes: ["./site:/www"]
    command: httpd -f -p 80 -h /www
secrets:
  token:
    file: ./token.txt
EOF`)
			if out, err := d.shErr(`cd ~/proj && docker compose up -d 2>&1`); err != nil {
				t.Fatalf("docker compose up -d: %v\n%s", err, out)
			}
			answers(t, "127.0.0.1:"+port, "served-from-"+d.name, 30*time.Second)
			if out := d.sh(`cd ~/proj && docker compose exec -T web cat /token-copy`); out != "s3cret\n" {
				t.Fatalf("the build secret in the image: %q", out)
			}
			d.sh(`cd ~/proj && docker compose down`)
		})
	}
	// ddinit status lists both distros and what they linked.
	out, err := in.CLI("status", "--wsl-shared", shared)
	if err != nil || !strings.Contains(out, "distro Ubuntu: linked /usr/local/bin/docker") || !strings.Contains(out, "distro Alpine: linked /usr/local/bin/docker") || !strings.Contains(out, "docker "+toolsCLIVersion) {
		t.Fatalf("ddinit status: %v\n%s", err, out)
	}
}

// A distro with a docker of its own, and one with a compose plugin of its
// own, keep them: nothing of ddinit's comes before them, and the proxy's
// state says what it left alone.
func TestCLIToolsLeaveTheDistrosOwn(t *testing.T) {
	_, shared := toolsWorld(t)
	mine := newFreshDistro(t, "Mine", `printf '#!/bin/sh\necho mine\n' > /usr/bin/docker && chmod +x /usr/bin/docker`)
	mine.startToolsProxy(shared)
	if out := mine.sh(`docker; test -e /usr/local/bin/docker && echo linked || true`); out != "mine\n" {
		t.Fatalf("the distro's own docker: %q", out)
	}
	plugin := newFreshDistro(t, "Plugin", `mkdir -p /usr/libexec/docker/cli-plugins && printf '#!/bin/sh\necho my compose\n' > /usr/libexec/docker/cli-plugins/docker-compose && chmod +x /usr/libexec/docker/cli-plugins/docker-compose`)
	plugin.startToolsProxy(shared)
	if out, _ := plugin.shErr(`ls /usr/local/lib/docker/cli-plugins; /usr/libexec/docker/cli-plugins/docker-compose`); strings.Contains(out, "docker-compose") || !strings.Contains(out, "my compose") {
		t.Fatalf("the distro's own compose plugin: %q", out)
	}
	for distro, kept := range map[string]string{"Mine": "/usr/bin/docker", "Plugin": "/usr/libexec/docker/cli-plugins/docker-compose"} {
		var st clitools.State
		b, err := os.ReadFile(filepath.Join(shared, config.SharedDistroStates, distro+".json"))
		if err != nil || json.Unmarshal(b, &st) != nil {
			t.Fatalf("%s's state: %v %s", distro, err, b)
		}
		found := false
		for _, l := range st.LeftAlone {
			found = found || l.Path == kept
		}
		if !found {
			t.Fatalf("%s's state does not name its own %s: %s", distro, kept, b)
		}
	}
}

// docker login from a distro to a registry that asks for a password, then
// a push and a pull; the user's config keeps what it had.
func TestCLIToolsLogin(t *testing.T) {
	in, shared := toolsWorld(t)
	ca, cert, key := testCA(t)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("tester:"+bcryptHash(t, "pa55word")+"\n"), 0o644)
	startAuthRegistry(t, t.TempDir(), registryHost, htpasswd, ca, cert, key)
	caPEM, _ := os.ReadFile(ca)
	caJSON, _ := json.Marshal(string(caPEM))
	if code, body := in.PutSettings(`{"generation": 0, "trustedCAs": [` + string(caJSON) + `]}`); code != http.StatusOK {
		t.Fatalf("the CA setting: %d %s", code, body)
	}
	d := newFreshDistro(t, "Ubuntu", "")
	d.startToolsProxy(shared)
	d.sh(`mkdir -p ~/.docker && echo '{"detachKeys": "ctrl-x,x"}' > ~/.docker/config.json`)
	image := registryHost + "/me/bb:1"
	if out, err := d.shErr(`docker pull ` + image); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") && !strings.Contains(out, "no basic auth") {
		t.Fatalf("a pull before the login: %v %s", err, out)
	}
	if out := d.sh(`echo pa55word | docker login -u tester --password-stdin ` + registryHost); !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("docker login: %s", out)
	}
	d.sh(`docker tag busybox:local ` + image + ` && docker push ` + image + ` && docker rmi ` + image + ` && docker pull ` + image)
	if out := d.sh(`docker run --rm ` + image + ` echo pulled`); out != "pulled\n" {
		t.Fatalf("the pulled image: %q", out)
	}
	if cfg := d.sh(`cat ~/.docker/config.json`); !strings.Contains(cfg, "ctrl-x,x") || !strings.Contains(cfg, registryHost) {
		t.Fatalf("the user's config after the login: %s", cfg)
	}
}

// The tools live on the distro's side: while the engine is stopped idle
// docker is there and its first command wakes it; through a live version
// pack switch a loop of docker version never fails, and afterwards the
// engine is the new pack's.
func TestCLIToolsWhileTheEngineSleepsOrSwitches(t *testing.T) {
	in, shared := toolsWorld(t, "--idle-stop", "3s")
	ns := in.PidNS()
	d := newFreshDistro(t, "Ubuntu", "")
	d.startToolsProxy(shared)
	in.WaitIdle(ns, 30*time.Second)
	if out := d.sh(`docker ps --format '{{.Names}}' && echo answered`); !strings.HasSuffix(out, "answered\n") {
		t.Fatalf("docker ps after an idle stop: %q", out)
	}
	loop := d.command("sh", "-c", `end=$(( $(date +%s) + 40 )); n=0; while [ $(date +%s) -lt $end ]; do
out=$(docker version --format '{{.Client.Version}} {{.Server.Version}}' 2>&1) || { echo "FAILED: $out"; exit 1; }
n=$((n+1)); [ -e /tmp/stop ] && break; done; echo "ran $n"`)
	var loopOut harness.SyncBuffer
	loop.Stdout, loop.Stderr = &loopOut, &loopOut
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := in.CLI("pack", "use", "--live", harness.TestPack(t, "pack2")); err != nil {
		t.Fatalf("the live switch: %v\n%s", err, out)
	}
	harness.WaitUntil(t, 2*time.Minute, "the engine of pack2", func() bool {
		out, err := in.DockerErr("info", "--format", "{{.Labels}}")
		return err == nil && strings.Contains(out, "pack=2")
	})
	d.sh(`touch /tmp/stop`)
	err := loop.Wait()
	if out := loopOut.String(); err != nil || strings.Contains(out, "FAILED") || strings.Contains(out, "not found") || strings.Contains(out, "exec format") {
		t.Fatalf("docker version through the switch: %v\n%s", err, out)
	}
	t.Logf("docker version through the switch: %s", strings.TrimSpace(loopOut.String()))
	if out := d.sh(`docker version --format '{{.Client.Version}}' && docker info --format '{{.Labels}}'`); !strings.HasPrefix(out, toolsCLIVersion+"\n") || !strings.Contains(out, "pack=2") {
		t.Fatalf("after the switch: %q", out)
	}
}

// Integration turned off: the proxy's --uninstall removes the links and
// the folders made for them, and nothing else in the distro changes.
func TestCLIToolsUninstall(t *testing.T) {
	_, shared := toolsWorld(t)
	d := newFreshDistro(t, "Ubuntu", "")
	list := `find /usr/local /usr/share/bash-completion /usr/share/zsh /usr/share/fish -printf '%p %y %l\n' 2>/dev/null | sort`
	before := d.sh(list)
	stop := d.startToolsProxy(shared)
	if out := d.sh(`readlink /usr/local/bin/docker /usr/local/lib/docker/cli-plugins/docker-compose`); !strings.Contains(out, filepath.Join(shared, config.SharedCLITools, clitools.Current)) {
		t.Fatalf("the links: %q", out)
	}
	// A link removed comes back while the proxy runs.
	d.sh(`rm /usr/local/bin/docker`)
	within(t, 15*time.Second, "the removed link made again", func() bool {
		_, err := d.shErr(`test -L /usr/local/bin/docker`)
		return err == nil
	})
	stop()
	bin := filepath.Join(shared, "docker-desktop", "ddinit")
	if out, err := d.command(bin, "proxy", "--distro", d.name, "--wsl-shared", shared, "--uninstall").CombinedOutput(); err != nil {
		t.Fatalf("ddinit proxy --uninstall: %v\n%s", err, out)
	}
	if after := d.sh(list); after != before {
		t.Fatalf("the distro changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if exists(filepath.Join(shared, config.SharedDistroStates, "Ubuntu.json")) {
		t.Fatal("the distro's state file stayed")
	}
}

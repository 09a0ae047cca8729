package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/ddinit/ddinit/kubeapi"
)

// kubeWorld is ddinit with the Kubernetes image and the CLI tools (for
// kubectl), offering both in a shared tmpfs; kubectl runs as a distro's
// user would, on the kubeconfig offered there.
type kubeWorld struct {
	t      *testing.T
	in     *harness.Instance
	shared string
	data   string
}

func startKube(t *testing.T, shared, data string) *harness.Instance {
	in := harness.Start(t, harness.Options{DataDir: data, CLITools: harness.CLIToolsISO, Kubernetes: harness.KubernetesISO, Extra: []string{"--wsl-shared", shared, "--expose", "kubernetes=unix://" + filepath.Join(shared, "..", "kube-api.sock")}})
	in.WaitPing(90 * time.Second)
	return in
}

// kubectl runs the offered kubectl on the offered kubeconfig.
func (w *kubeWorld) kubectl(args ...string) (string, error) {
	bin := filepath.Join(w.shared, config.SharedCLITools, clitools.Current, "bin/kubectl")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", filepath.Join(w.shared, config.SharedKubeconfig), "--request-timeout=20s"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (w *kubeWorld) must(args ...string) string {
	w.t.Helper()
	out, err := w.kubectl(args...)
	if err != nil {
		w.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually retries kubectl until its output holds want.
func (w *kubeWorld) eventually(d time.Duration, want string, args ...string) {
	w.t.Helper()
	var out string
	var err error
	start := time.Now()
	for time.Since(start) < d {
		if out, err = w.kubectl(args...); err == nil && strings.Contains(out, want) {
			return
		}
		time.Sleep(time.Second)
	}
	w.t.Fatalf("kubectl %s: no %q within %s (last: %v %s)\nstatus: %s", strings.Join(args, " "), want, d, err, out, kubeStatus(w.in))
}

func kubeStatus(in *harness.Instance) string {
	st := in.Status()
	b, _ := json.Marshal(struct {
		K *control.Kubernetes
		S []control.ServiceStatus
	}{st.Kubernetes, st.Services})
	return string(b)
}

// kubeProcesses are the host pids of the cluster's processes in pid
// namespace ns: the kube program's (named by their first argument, or
// every one of them for ""), and the pods' pause.
func kubeProcesses(ns, name string) []int {
	var pids []int
	for _, p := range harness.InNS(ns) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.Pid), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		kube := strings.HasSuffix(args[0], "/usr/bin/kube") && len(args) > 1 && (name == "" || args[1] == name)
		if kube || name == "" && p.Comm == "pause" {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

const webDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ddinit-e2e/web:1
        imagePullPolicy: Never
        ports: [{containerPort: 80}]
`

// The Kubernetes setting brings a real single-node cluster up and down:
// kubectl from the distro on the offered context finds the node Ready;
// images docker built run in pods with no registry, on this store and one
// built by 20.10 before an upgrade; a LoadBalancer
// Service answers on the distro's localhost; pods resolve Services by
// name; kubelet killed is restarted; a reboot keeps the Deployment; off
// leaves no Kubernetes process and docker as it was; a reset makes a new
// empty cluster.
func TestKubernetes(t *testing.T) {
	harness.RequireEnvironment(t)
	if !exists(harness.KubernetesISO) {
		t.Skipf("%s is missing (make isos builds it)", harness.KubernetesISO)
	}
	if !staticBinary(t) {
		t.Skip("kubectl comes from the CLI tools offer, which only a static build publishes")
	}
	shared := newShared(t)
	data, _ := harness.NewDirs(t)
	w := &kubeWorld{t: t, shared: shared, data: data}

	// A store upgraded from 20.10: an image built there, by dockerd 20.10
	// in its graph driver, must run in a pod too.
	old := harness.Start(t, harness.Options{DataDir: data, Pack: harness.Pack2010ISO})
	old.WaitPing(90 * time.Second)
	old.ImportBusybox()
	oldDir := t.TempDir()
	os.WriteFile(filepath.Join(oldDir, "Dockerfile"), []byte("FROM busybox:local\nRUN echo built by 20.10 > /built\nCMD [\"sleep\", \"3600\"]\n"), 0o644)
	old.Docker("build", "-t", "ddinit-e2e/old:1", oldDir)
	if code, _ := old.Stop(); code != 0 {
		t.Fatalf("the 20.10 pack's stop: exit %d", code)
	}

	w.in = startKube(t, shared, data)
	in := w.in
	in.Docker("run", "-d", "--name", "keeper", "busybox:local", "sleep", "3600")

	start := time.Now()
	if code, body := in.PutSettings(`{"generation": 0, "kubernetes": true}`); code != http.StatusOK {
		t.Fatalf("kubernetes on: %d %s", code, body)
	}
	// live-restore: the engine restarted with containerd's CRI, the
	// container kept running.
	if out := in.Docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", "keeper"); !strings.HasPrefix(out, "true") {
		t.Fatalf("a container across Kubernetes' switch: %s", out)
	}
	w.eventually(3*time.Minute, " Ready ", "get", "nodes")
	t.Logf("node Ready %s after the switch", time.Since(start).Round(time.Second))

	// A distro: its proxy links kubectl and merges the docker-desktop
	// context into the default user's kubeconfig (root's, in a distro
	// with no other user); kubectl there needs nothing else.
	d := newBusyboxDistro(t, "kube", shared)
	stopProxy := d.startToolsProxy(shared)
	var out string
	within(t, 30*time.Second, "kubectl in the distro on its own ~/.kube/config", func() bool {
		out, _ = d.shErr("HOME=/root kubectl get nodes --no-headers")
		return strings.Contains(out, " Ready ")
	})
	if cfg := d.sh("cat /root/.kube/config"); !strings.Contains(cfg, "current-context: docker-desktop") {
		t.Fatalf("the distro's kubeconfig:\n%s", cfg)
	}
	stopProxy()

	// The frontend's way in: the admin kubeconfig from the control API,
	// the API server through an exposed socket (vsock on Windows).
	code, kc := in.Get(http.MethodGet, "/kubernetes/kubeconfig")
	if code != http.StatusOK || !strings.Contains(kc, `"docker-desktop"`) {
		t.Fatalf("GET /kubernetes/kubeconfig: %d %s", code, kc)
	}
	if v := exposedAPIVersion(t, filepath.Join(shared, "..", "kube-api.sock"), []byte(kc)); !strings.Contains(v, "v1.37") {
		t.Fatalf("the API server through the exposed socket: %s", v)
	}

	// An image docker built, in a pod, no registry.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox:local\nRUN mkdir -p /www && echo hello from docker build > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"), 0o644)
	in.Docker("build", "-t", "ddinit-e2e/web:1", dir)
	manifest := filepath.Join(dir, "web.yaml")
	os.WriteFile(manifest, []byte(webDeployment), 0o644)
	w.must("apply", "-f", manifest)
	w.eventually(2*time.Minute, "Running", "get", "pods", "-l", "app=web", "--no-headers")
	w.must("run", "old", "--image=ddinit-e2e/old:1", "--image-pull-policy=Never")
	w.eventually(2*time.Minute, "built by 20.10", "exec", "old", "--", "cat", "/built")

	// A LoadBalancer on the distro's localhost.
	w.must("expose", "deployment", "web", "--type=LoadBalancer", "--port=18080", "--target-port=80")
	answers(t, "127.0.0.1:18080", "hello from docker build", time.Minute)
	w.eventually(30*time.Second, "localhost", "get", "svc", "web", "--no-headers")

	// Names from a pod: the API's Service and another.
	pod := strings.TrimSpace(w.must("get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"))
	w.eventually(time.Minute, "10.96.0.1", "exec", pod, "--", "busybox", "nslookup", "kubernetes.default.svc.cluster.local")
	w.eventually(time.Minute, "hello from docker build", "exec", pod, "--", "wget", "-qO-", "http://web.default.svc.cluster.local:18080/")

	// kubelet killed: ddinit restarts it, the node is Ready again.
	before := serviceStatus(in.Status(), "kubelet")
	kubelet := kubeProcesses(in.PidNS(), "kubelet")
	if len(kubelet) != 1 {
		t.Fatalf("want one kubelet, found %v", kubelet)
	}
	syscall.Kill(kubelet[0], syscall.SIGKILL)
	within(t, time.Minute, "kubelet restarted", func() bool {
		st := serviceStatus(in.Status(), "kubelet")
		return st.Restarts > before.Restarts && st.Ready
	})
	w.eventually(2*time.Minute, " Ready ", "get", "nodes")

	// A reboot keeps the Deployment, Running again.
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	w.in = startKube(t, shared, data)
	in = w.in
	w.eventually(3*time.Minute, "Running", "get", "pods", "-l", "app=web", "--no-headers")
	answers(t, "127.0.0.1:18080", "hello from docker build", time.Minute)
	in.Docker("start", "keeper") // a reboot stops containers
	keeperStarted := in.Docker("inspect", "-f", "{{.State.StartedAt}}", "keeper")

	// Off: no Kubernetes process left, docker as it was.
	if code, body := in.PutSettings(`{"generation": 1, "kubernetes": false}`); code != http.StatusOK {
		t.Fatalf("kubernetes off: %d %s", code, body)
	}
	ns := in.PidNS()
	if left := kubeProcesses(ns, ""); len(left) > 0 {
		t.Fatalf("Kubernetes processes left once it is off: %v", left)
	}
	if st := in.Status().Kubernetes; st == nil || st.State != "off" {
		t.Fatalf("status with Kubernetes off: %+v", st)
	}
	if !refused("127.0.0.1:6443") || !refused("127.0.0.1:18080") {
		t.Fatal("the cluster's ports stayed published after Kubernetes went off")
	}
	if out := in.Docker("inspect", "-f", "{{.State.StartedAt}}", "keeper"); out != keeperStarted {
		t.Fatalf("a container across Kubernetes off: started %s, was %s", out, keeperStarted)
	}

	// On again, then reset: a new, empty cluster.
	if code, body := in.PutSettings(`{"generation": 2, "kubernetes": true}`); code != http.StatusOK {
		t.Fatalf("kubernetes on again: %d %s", code, body)
	}
	w.eventually(3*time.Minute, "web", "get", "deployments")
	reset, err := exec.Command(in.Binary(), "kubernetes", "reset", "--control", "unix://"+in.ControlSock()).CombinedOutput()
	if err != nil {
		t.Fatalf("ddinit kubernetes reset: %v %s", err, reset)
	}
	w.eventually(3*time.Minute, " Ready ", "get", "nodes")
	if out := w.must("get", "deployments", "-A", "--no-headers"); strings.Contains(out, "web") {
		t.Fatalf("after the reset: %s", out)
	}
}

// exposedAPIVersion asks the API server's /version through the exposed
// socket, as the kubeconfig's admin, verifying the server by its name.
func exposedAPIVersion(t *testing.T, sock string, kubeconfig []byte) string {
	t.Helper()
	kc, err := kubeapi.ParseKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(kc.CA)
	cert, err := tls.X509KeyPair(kc.Cert, kc.Key)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "kubernetes.docker.internal"},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://kubernetes.docker.internal/version")
	if err != nil {
		t.Fatalf("the API server through %s: %v", sock, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

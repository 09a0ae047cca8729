package kubepki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// An address that did not parse (nil) is an error, not a certificate
// nothing can read.
func TestNilNodeIP(t *testing.T) {
	dir := t.TempDir()
	_, _, err := Ensure(dir, Options{NodeName: "n", NodeIPs: []net.IP{nil}, Now: day0})
	if err == nil {
		_, why := readCert(files(dir, "apiserver").Cert)
		t.Errorf("Ensure with a nil node IP succeeded; apiserver.crt: %s", why)
	}
}

// kubectlPath is the kubectl of `make kube`'s build, or skips.
func kubectlPath(t *testing.T) string {
	dir, err := exec.Command("bash", "../scripts/build-kube.sh", "--cached").Output()
	if err != nil {
		t.Skip("no kubectl: `make kube` builds it")
	}
	return filepath.Join(strings.TrimSpace(string(dir)), "kubectl")
}

// Real kubectl reads the kubeconfig, and speaks TLS with the PKI's
// certificates to a server with the apiserver's, at each name.
func TestKubectl(t *testing.T) {
	kubectl := kubectlPath(t)
	dir := t.TempDir()
	p, _ := ensure(t, dir, Options{NodeName: "docker-desktop", NodeIPs: []net.IP{net.ParseIP("127.0.0.2")}, ServiceIP: net.ParseIP("10.96.0.1")})
	server, _ := tls.LoadX509KeyPair(p.Of("apiserver").Cert, p.Of("apiserver").Key)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/version" {
			fmt.Fprintf(w, `{"major":"1","minor":"37","gitVersion":"v1.37.2","platform":"as %s"}`, r.TLS.PeerCertificates[0].Subject.CommonName)
			return
		}
		http.NotFound(w, r)
	})}
	go srv.Serve(l)
	defer srv.Close()
	port := l.Addr().(*net.TCPAddr).Port
	b, err := p.Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", port), "admin")
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(dir, "config")
	os.WriteFile(kc, b, 0o600)
	for _, args := range [][]string{{"config", "view", "--raw"}, {"config", "get-contexts"}, {"config", "current-context"}} {
		out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl %v: %v\n%s", args, err, out)
		}
		if args[1] == "view" && !strings.Contains(string(out), "client-key-data: ") {
			t.Errorf("view: %s", out)
		}
		if args[1] != "view" {
			t.Logf("%v: %s", args, out)
		}
	}
	for _, name := range []string{"", "localhost", "kubernetes", "kubernetes.default.svc.cluster.local", "kubernetes.docker.internal", "docker-desktop", "10.96.0.1", "127.0.0.2"} {
		args := []string{"--kubeconfig", kc, "version", "-o", "json", "--request-timeout", "5s"}
		if name != "" {
			args = append(args, "--tls-server-name", name)
		}
		out, err := exec.Command(kubectl, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "as kubernetes-admin") {
			t.Errorf("kubectl version at %q: %v\n%s", name, err, out)
		}
	}
	out, err := exec.Command(kubectl, "--kubeconfig", kc, "version", "--request-timeout", "5s", "--tls-server-name", "example.com").CombinedOutput()
	if err == nil {
		t.Errorf("example.com accepted: %s", out)
	}
	_ = time.Second
}

package kubepki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ddinit/ddinit/internal/testutil"
)

var day0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func options(now time.Time, nodeIPs ...string) Options {
	o := Options{NodeName: "docker-desktop", ServiceIP: net.ParseIP("10.96.0.1"), Now: now}
	for _, ip := range nodeIPs {
		o.NodeIPs = append(o.NodeIPs, net.ParseIP(ip))
	}
	return o
}

func ensure(t *testing.T, dir string, o Options) (*PKI, Report) {
	t.Helper()
	p, report, err := Ensure(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return p, report
}

// snapshot is every file of the PKI's folder, by name.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			m[e.Name()] = []byte(e.Type().String()) // a FIFO left to replace
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = b
	}
	return m
}

// changed names the files whose bytes differ between two snapshots.
func changed(before, after map[string][]byte) []string {
	var names []string
	for name, b := range after {
		if !bytes.Equal(before[name], b) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// The API server's certificate is accepted by a TLS client at every name
// and address a user or a pod reaches it by, and the server accepts each
// component's client certificate with the identity Kubernetes reads from
// it: Go's own TLS on both sides.
func TestTLSAcceptsTheClusterAtEveryName(t *testing.T) {
	p, _ := ensure(t, t.TempDir(), options(day0, "192.168.65.3"))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.CA) {
		t.Fatal("the CA does not parse")
	}
	server, err := tls.LoadX509KeyPair(p.Of("apiserver").Cert, p.Of("apiserver").Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kubernetes.docker.internal", "localhost", "127.0.0.1", "::1", "10.96.0.1", "192.168.65.3", "kubernetes.default.svc.cluster.local", "kubernetes"} {
		for _, user := range []struct{ name, cn, org string }{
			{"admin", "kubernetes-admin", "system:masters"},
			{"kubelet", "system:node:docker-desktop", "system:nodes"},
			{"controller-manager", "system:kube-controller-manager", ""},
		} {
			client, err := tls.LoadX509KeyPair(p.Of(user.name).Cert, p.Of(user.name).Key)
			if err != nil {
				t.Fatal(err)
			}
			seen := handshake(t, &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert},
				&tls.Config{Certificates: []tls.Certificate{client}, RootCAs: roots, ServerName: name})
			if seen.Subject.CommonName != user.cn || strings.Join(seen.Subject.Organization, ",") != user.org {
				t.Errorf("%s at %s: the server saw %s", user.name, name, seen.Subject)
			}
		}
	}
	// And not at a name it was not made for.
	client, _ := tls.LoadX509KeyPair(p.Of("admin").Cert, p.Of("admin").Key)
	if err := handshakeErr(t, &tls.Config{Certificates: []tls.Certificate{server}}, &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: roots, ServerName: "example.com"}); err == nil {
		t.Error("the API server's certificate was accepted for example.com")
	}
	// A client certificate is no server's.
	if err := handshakeErr(t, &tls.Config{Certificates: []tls.Certificate{client}}, &tls.Config{RootCAs: roots, ServerName: "localhost"}); err == nil {
		t.Error("the admin's client certificate was accepted as a server's")
	}
}

// connected is the two ends of a TCP connection on the loopback: unlike
// net.Pipe's, its writes are buffered, so a side that fails and sends an
// alert while the other is still writing its flight does not deadlock.
func connected(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	return server, client
}

// clocked sets the TLS clock to the tests' day.
func clocked(c *tls.Config) *tls.Config {
	c.Time = func() time.Time { return day0 }
	return c
}

func handshakeErr(t *testing.T, serverConf, clientConf *tls.Config) error {
	serverConf, clientConf = clocked(serverConf), clocked(clientConf)
	a, b := connected(t)
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- tls.Server(a, serverConf).Handshake(); a.Close() }()
	err := tls.Client(b, clientConf).Handshake()
	b.Close()
	serr := <-done
	if err == nil {
		err = serr
	}
	return err
}

// handshake is the client certificate the server saw.
func handshake(t *testing.T, serverConf, clientConf *tls.Config) *x509.Certificate {
	t.Helper()
	serverConf, clientConf = clocked(serverConf), clocked(clientConf)
	a, b := connected(t)
	defer a.Close()
	defer b.Close()
	type result struct {
		peer *x509.Certificate
		err  error
	}
	done := make(chan result, 1)
	go func() {
		s := tls.Server(a, serverConf)
		err := s.Handshake()
		var peer *x509.Certificate
		if err == nil && len(s.ConnectionState().PeerCertificates) > 0 {
			peer = s.ConnectionState().PeerCertificates[0]
		}
		a.Close()
		done <- result{peer, err}
	}()
	if err := tls.Client(b, clientConf).Handshake(); err != nil {
		b.Close()
		<-done
		t.Fatalf("handshake as %s: %v", clientConf.ServerName, err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	return r.peer
}

// OpenSSL agrees: every leaf verifies against the CA for its purpose.
func TestOpenSSLVerifiesEveryLeaf(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	p, _ := ensure(t, t.TempDir(), options(day0, "192.168.65.3"))
	for _, name := range Leaves() {
		purpose := "sslclient"
		if name == "apiserver" || name == "kubelet-serving" {
			purpose = "sslserver"
		}
		out, err := exec.Command(openssl, "verify", "-attime", strconv.FormatInt(day0.Unix(), 10), "-purpose", purpose, "-CAfile", p.CAFiles().Cert, p.Of(name).Cert).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify %s: %v: %s", name, err, out)
		}
	}
}

// A second start keeps every file byte for byte: a new CA would void
// every kubeconfig handed out, a new service-account key every token.
func TestEnsureKeepsWhatIsValid(t *testing.T) {
	dir := t.TempDir()
	_, first := ensure(t, dir, options(day0, "192.168.65.3"))
	if len(first) != 2+len(Leaves()) {
		t.Fatalf("a first start made %v", first)
	}
	before := snapshot(t, dir)
	_, report := ensure(t, dir, options(day0.Add(300*24*time.Hour), "192.168.65.3"))
	if len(report) != 0 {
		t.Errorf("a second start made %v", report)
	}
	if c := changed(before, snapshot(t, dir)); len(c) != 0 {
		t.Errorf("a second start changed %v", c)
	}
	if info, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v, %v", info.Mode(), err)
	}
}

// What must change is made again, and nothing else: a new node address
// the serving certificates; a month before their end the leaves (the CA
// lasts ten years).
func TestEnsureRenewsWhatChanged(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, options(day0, "192.168.65.3"))
	before := snapshot(t, dir)
	_, report := ensure(t, dir, options(day0, "192.168.65.4"))
	want := []string{"apiserver.crt", "apiserver.key", "kubelet-serving.crt", "kubelet-serving.key"}
	if c := changed(before, snapshot(t, dir)); !slices.Equal(c, want) {
		t.Errorf("a new node address changed %v (%v), want %v", c, report, want)
	}

	before = snapshot(t, dir)
	_, report = ensure(t, dir, options(day0.Add(340*24*time.Hour), "192.168.65.4"))
	c := changed(before, snapshot(t, dir))
	if slices.Contains(c, "ca.crt") || slices.Contains(c, "sa.key") || len(c) != 2*len(Leaves()) {
		t.Errorf("11 months on, changed %v (%v)", c, report)
	}
	for _, r := range report {
		if !strings.Contains(r, "ends ") {
			t.Errorf("renewed for %q", r)
		}
	}
}

// Every way a file of the PKI can be unusable makes it (and what depends
// on it) again, saying why, and leaves a PKI TLS accepts: the class of
// what a crash, a full disk or a hand can leave.
func TestEnsureRemakesWhatIsDamaged(t *testing.T) {
	other := t.TempDir()
	otherPKI, _ := ensure(t, other, options(day0))
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		remade []string // files that must have changed
		why    string
	}{
		{"a truncated CA", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, "ca.crt"), 100) }, []string{"ca.crt", "apiserver.crt"}, "ca: ca.crt not PEM"},
		{"an empty CA key", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, "ca.key"), 0) }, []string{"ca.crt", "ca.key", "admin.crt"}, "ca: ca.key not PEM"},
		{"a missing CA key", func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "ca.key")) }, []string{"ca.crt", "kubelet.crt"}, "ca: ca.key missing"},
		{"another cluster's CA", func(t *testing.T, dir string) {
			copyFile(t, otherPKI.CAFiles().Cert, filepath.Join(dir, "ca.crt"))
		}, []string{"ca.crt", "scheduler.crt"}, "ca: the key is not the certificate's"},
		{"a leaf signed by another CA", func(t *testing.T, dir string) {
			copyFile(t, otherPKI.Of("admin").Cert, filepath.Join(dir, "admin.crt"))
			copyFile(t, otherPKI.Of("admin").Key, filepath.Join(dir, "admin.key"))
		}, []string{"admin.crt", "admin.key"}, "admin: not signed by the cluster CA"},
		{"a leaf that is the CA", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "admin.crt"))
			copyFile(t, filepath.Join(dir, "ca.key"), filepath.Join(dir, "admin.key"))
		}, []string{"admin.crt"}, "admin: a CA, not a leaf"},
		{"a key in place of a certificate", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(dir, "kube-proxy.key"), filepath.Join(dir, "kube-proxy.crt"))
		}, []string{"kube-proxy.crt"}, `kube-proxy: kube-proxy.crt a "EC PRIVATE KEY" block, not "CERTIFICATE"`},
		{"a FIFO for a key", func(t *testing.T, dir string) {
			remove(t, filepath.Join(dir, "coredns.key"))
			if err := unix.Mkfifo(filepath.Join(dir, "coredns.key"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"coredns.key"}, "coredns: coredns.key unreadable"},
		{"a service-account key without its public half", func(t *testing.T, dir string) {
			copyFile(t, filepath.Join(other, "sa.pub"), filepath.Join(dir, "sa.pub"))
		}, []string{"sa.pub"}, "sa: sa.pub is not sa.key's, written again from sa.key"},
		{"garbage", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "apiserver.key"), []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"apiserver.key", "apiserver.crt"}, "apiserver: apiserver.key not an EC key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ensure(t, dir, options(day0))
			c.damage(t, dir)
			before := snapshot(t, dir)
			p, report := ensure(t, dir, options(day0))
			if !slices.ContainsFunc(report, func(r string) bool { return strings.HasPrefix(r, c.why) }) {
				t.Errorf("report %q, want one starting %q", report, c.why)
			}
			got := changed(before, snapshot(t, dir))
			for _, f := range c.remade {
				if !slices.Contains(got, f) {
					t.Errorf("%s was not made again (changed: %v)", f, got)
				}
			}
			checkChains(t, p)
		})
	}
}

// A folder in a certificate's place is an error naming it, not a loop.
func TestEnsureSaysWhatItCannotReplace(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "admin.crt", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, _, err := Ensure(dir, options(day0))
	if err == nil || !strings.Contains(err.Error(), "admin.crt") {
		t.Fatalf("Ensure over a folder: %v", err)
	}
	if _, _, err := Ensure(dir, Options{}); err == nil {
		t.Error("Ensure with no node name succeeded")
	}
}

// Every leaf verifies against the CA for its use.
func checkChains(t *testing.T, p *PKI) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA)
	for _, name := range Leaves() {
		cert, why := readCert(p.Of(name).Cert)
		if why != "" {
			t.Fatalf("%s: %s", name, why)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: day0, KeyUsages: cert.ExtKeyUsage}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := tls.LoadX509KeyPair(p.Of(name).Cert, p.Of(name).Key); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The kubeconfig carries everything inline and names the context users
// know.
func TestKubeconfigIsSelfContained(t *testing.T) {
	p, _ := ensure(t, t.TempDir(), options(day0))
	b, err := p.Kubeconfig("https://127.0.0.1:6443", "admin")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Clusters []struct {
			Name    string
			Cluster struct {
				Server string
				CA     string `json:"certificate-authority-data"`
			}
		}
		Users []struct {
			User struct {
				Cert string `json:"client-certificate-data"`
				Key  string `json:"client-key-data"`
			}
		}
		Current string `json:"current-context"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Current != "docker-desktop" || len(doc.Clusters) != 1 || doc.Clusters[0].Cluster.Server != "https://127.0.0.1:6443" || len(doc.Users) != 1 {
		t.Fatalf("kubeconfig: %s", b)
	}
	ca, _ := base64.StdEncoding.DecodeString(doc.Clusters[0].Cluster.CA)
	cert, _ := base64.StdEncoding.DecodeString(doc.Users[0].User.Cert)
	key, _ := base64.StdEncoding.DecodeString(doc.Users[0].User.Key)
	if !bytes.Equal(ca, p.CA) {
		t.Error("the kubeconfig's CA is not the cluster's")
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		t.Errorf("the kubeconfig's credentials: %v", err)
	}
	if block, _ := pem.Decode(cert); block == nil {
		t.Error("the kubeconfig's certificate is not PEM")
	}
	if _, err := p.Kubeconfig("https://127.0.0.1:6443", "nobody"); err == nil {
		t.Error("a kubeconfig for an unknown user was made")
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

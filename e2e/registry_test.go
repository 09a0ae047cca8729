package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ddinit/ddinit/e2e/harness"
)

// The distro's end of the link to the namespace: an address that is not
// on 127.0.0.0/8, which dockerd would treat as an insecure registry.
const registryHost = "100.64.249.1:5443"

// testCA makes a CA and a server certificate for registryHost signed by
// it, with openssl; it returns the CA's certificate, the server's
// certificate and key.
func testCA(t *testing.T) (ca, cert, key string) {
	host := strings.Split(registryHost, ":")[0]
	return testCAFor(t, host, "IP:"+host)
}

// testCAFor makes a CA and a certificate for host (san: its
// subjectAltName, "IP:…" or "DNS:…") signed by it.
func testCAFor(t *testing.T, host, san string) (ca, cert, key string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is missing (make deps installs it)")
	}
	dir := t.TempDir()
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	ext := filepath.Join(dir, "ext.cnf")
	os.WriteFile(ext, []byte("subjectAltName="+san+"\n"), 0o644)
	for _, args := range [][]string{
		{"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", filepath.Join(dir, "ca.key"), "-out", ca, "-days", "2", "-subj", "/CN=ddinit test CA"},
		{"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", filepath.Join(dir, "registry.csr"), "-subj", "/CN=" + host},
		{"x509", "-req", "-in", filepath.Join(dir, "registry.csr"), "-CA", ca, "-CAkey", filepath.Join(dir, "ca.key"), "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext},
	} {
		if b, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", args[0], err, b)
		}
	}
	return ca, cert, key
}

// startRegistry runs Debian's docker-registry with TLS on registryHost,
// storing under dir, until the test ends or the returned stop is called.
func startRegistry(t *testing.T, dir, ca, cert, key string) (stop func()) {
	return startRegistryAt(t, dir, registryHost, nil, ca, cert, key, "")
}

// startAuthRegistry runs the registry on addr asking for the users and
// bcrypt passwords of the htpasswd file.
func startAuthRegistry(t *testing.T, dir, addr, htpasswd, ca, cert, key string) (stop func()) {
	return startRegistryAt(t, dir, addr, nil, ca, cert, key, htpasswd)
}

// startRegistryAt runs the registry on addr; with in set, in the network
// namespace it enters (nsenter's arguments), reached there for the check
// that it answers. With htpasswd set, it asks for a user and password.
func startRegistryAt(t *testing.T, dir, addr string, in *harness.DNSWorld, ca, cert, key, htpasswd string) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is missing (make deps installs it)")
	}
	conf := filepath.Join(dir, "config.yml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  tls:
    certificate: %s
    key: %s
`, filepath.Join(dir, "data"), addr, cert, key)+authConfig(htpasswd)), 0o644)
	var out harness.SyncBuffer
	cmd := exec.Command(bin, "serve", conf)
	if in != nil {
		cmd = exec.Command("nsenter", "--net="+in.Distro, bin, "serve", conf)
	}
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(ca)
	pool.AppendCertsFromPEM(b)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var c *tls.Conn
		var err error
		dial := func() { c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, InsecureSkipVerify: in != nil}) }
		if in != nil {
			in.In(in.Distro, dial)
		} else {
			dial()
		}
		if err == nil {
			c.Close()
			return stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry does not answer TLS on %s: %v\n%s", addr, err, out.String())
		}
	}
}

func authConfig(htpasswd string) string {
	if htpasswd == "" {
		return ""
	}
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: ddinit-test\n    path: %s\n", htpasswd)
}

// bcryptHash is password as an htpasswd file holds it for the registry.
func bcryptHash(t *testing.T, password string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// dockerd verifies registries with the version pack's CA bundle: the
// default pack holds Debian's, so a registry signed by an unknown CA is
// refused; a pack whose bundle also holds that CA pulls from it.
func TestRegistryTLSUsesThePacksBundle(t *testing.T) {
	harness.RequireEnvironment(t)
	ca, cert, key := testCA(t)
	registryDir := t.TempDir()
	caPEM, _ := os.ReadFile(ca)
	trusting := harness.CustomPack(t, func(root string) {
		bundle := filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")
		b, err := os.ReadFile(bundle)
		if err != nil {
			t.Fatalf("the version pack has no CA bundle: %v", err)
		}
		os.WriteFile(bundle, append(b, caPEM...), 0o644)
	})
	image := registryHost + "/e2e/busybox:1"

	in := harness.Start(t, harness.Options{Pack: trusting})
	in.WaitPing(60 * time.Second)
	stop := startRegistry(t, registryDir, ca, cert, key)
	in.ImportBusybox()
	in.Docker("tag", "busybox:local", image)
	in.Docker("push", image)
	in.Docker("rmi", image)
	in.Docker("pull", image)
	if out := in.Docker("run", "--rm", image, "echo", "pulled over TLS"); !strings.Contains(out, "pulled over TLS") {
		t.Fatalf("container from the pulled image printed %q", out)
	}
	stop()
	if code, _ := in.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	def := harness.Start(t, harness.Options{})
	def.WaitPing(60 * time.Second)
	startRegistry(t, registryDir, ca, cert, key)
	// The default pack carries the distro's own Debian bundle, byte for byte.
	inside, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/ssl/certs/ca-certificates.crt", def.Pid1()))
	debian, _ := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil || len(inside) == 0 || !bytes.Equal(inside, debian) {
		t.Fatalf("the default pack's CA bundle is not Debian's (%d bytes, %v)", len(inside), err)
	}
	if st := def.Status(); !strings.Contains(fmt.Sprint(st.Components), "ca-certificates") {
		t.Fatalf("version-pack.json does not name the bundle's version: %+v", st.Components)
	}
	out, err := def.DockerErr("pull", image)
	if err == nil || !strings.Contains(out, "certificate signed by unknown authority") {
		t.Fatalf("a pull from a registry signed by an unknown CA: %v\n%s", err, out)
	}
	t.Logf("default pack: %s", strings.TrimSpace(out))
	if code, _ := def.Stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

package kubepki

// Attacks on Ensure: what a crash, a clock, a hand or a second caller
// can leave in the folder, and the CAs and options it must refuse.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Every private key Ensure leaves is 0600, also one it kept.
func TestKeysAreOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, options(day0, "192.168.65.3"))
	// A copy or restore of the data store left the keys readable.
	for _, k := range []string{"ca.key", "sa.key", "admin.key"} {
		if err := os.Chmod(filepath.Join(dir, k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ensure(t, dir, options(day0, "192.168.65.3"))
	keys, _ := filepath.Glob(filepath.Join(dir, "*.key"))
	for _, k := range keys {
		st, err := os.Stat(k)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", filepath.Base(k), st.Mode(), err)
		}
	}
}

// Ensure reads only its own folder's files: a symlink to a key pair
// elsewhere is not kept (doc.go: "nor read files other than its own folder's").
func TestSymlinkOutOfTheFolder(t *testing.T) {
	other := t.TempDir()
	ensure(t, other, options(day0))
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "ca.key", "sa.key", "sa.pub"} {
		if err := os.Symlink(filepath.Join(other, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	_, report := ensure(t, dir, options(day0))
	for _, f := range []string{"ca.key", "sa.key"} {
		if st, _ := os.Lstat(filepath.Join(dir, f)); st.Mode()&os.ModeSymlink != 0 {
			t.Errorf("%s: a symlink out of the folder was read and kept (report %q)", f, report)
		}
	}
}

// Dangling symlinks, loops and empty folders at a key path.
func TestOddPaths(t *testing.T) {
	dir := t.TempDir()
	os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "ca.key"))
	os.Symlink("loop", filepath.Join(dir, "loop"))
	os.Symlink("loop", filepath.Join(dir, "admin.key"))
	p, report := ensure(t, dir, options(day0))
	checkChains(t, p)
	t.Logf("report %q", report)
	if err := os.Remove(filepath.Join(dir, "kubelet.key")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "kubelet.key"), 0o700)
	_, _, err := Ensure(dir, options(day0))
	t.Logf("empty folder at kubelet.key: %v", err)
	if err == nil || !strings.Contains(err.Error(), "kubelet.key") {
		t.Errorf("err %v", err)
	}
}

// selfSigned writes a CA of its own making as dir's CA.
func selfSigned(t *testing.T, dir string, mod func(*x509.Certificate)) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big1(), Subject: pkix.Name{CommonName: "ca"}, NotBefore: day0.Add(-time.Hour), NotAfter: day0.Add(1000 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	mod(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(files(dir, "ca"), der, key); err != nil {
		t.Fatal(err)
	}
}

func big1() *big.Int { n, _ := serial(); return n }

// A CA Ensure keeps must be one its leaves verify under, for their uses.
func TestCAThatCannotIssueForTheUses(t *testing.T) {
	for name, mod := range map[string]func(*x509.Certificate){
		"EKU serverAuth only": func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} },
		"name constraints":    func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"example.com"} },
		"path length 0":       func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			selfSigned(t, dir, mod)
			p, report := ensure(t, dir, options(day0, "192.168.65.3"))
			t.Logf("report %q", report)
			checkChainsFor(t, p)
		})
	}
}

// checkChains, with the names: each serving certificate at its names.
func checkChainsFor(t *testing.T, p *PKI) {
	t.Helper()
	checkChains(t, p)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA)
	cert, _ := readCert(p.Of("apiserver").Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: day0, DNSName: "kubernetes.default.svc"}); err != nil {
		t.Errorf("apiserver at kubernetes.default.svc: %v", err)
	}
}

// A leaf with the right names but an RSA key is made again.
func TestRSALeaf(t *testing.T) {
	dir := t.TempDir()
	p, _ := ensure(t, dir, options(day0))
	ca, caKey, _ := loadCA(p.CAFiles(), day0)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	l := leaves(options(day0))[2] // admin
	der, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big1(), Subject: l.subject, NotBefore: day0.Add(-time.Hour), NotAfter: day0.Add(300 * 24 * time.Hour), ExtKeyUsage: l.usage, KeyUsage: x509.KeyUsageDigitalSignature}, ca, key.Public(), caKey)
	os.WriteFile(p.Of("admin").Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(p.Of("admin").Key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	p, report := ensure(t, dir, options(day0))
	if !slices.ContainsFunc(report, func(r string) bool { return strings.HasPrefix(r, "admin:") }) {
		t.Errorf("report %q", report)
	}
	checkChains(t, p)
}

// A crash between a key and its certificate: the key new, the certificate old.
func TestCrashBetweenKeyAndCert(t *testing.T) {
	for _, name := range []string{"ca", "apiserver"} {
		dir := t.TempDir()
		ensure(t, dir, options(day0))
		k, _ := newKey()
		kb, _ := x509.MarshalECPrivateKey(k)
		os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
		p, report := ensure(t, dir, options(day0))
		t.Logf("%s: %q", name, report)
		checkChains(t, p)
	}
}

// Losing sa.pub (derivable from sa.key) must not replace sa.key: that
// voids every token handed out.
func TestLostPublicHalfKeepsTheServiceAccountKey(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, options(day0))
	before, _ := os.ReadFile(filepath.Join(dir, "sa.key"))
	remove(t, filepath.Join(dir, "sa.pub"))
	_, report := ensure(t, dir, options(day0))
	after, _ := os.ReadFile(filepath.Join(dir, "sa.key"))
	if string(before) != string(after) {
		t.Errorf("sa.key replaced because sa.pub was missing (report %q)", report)
	}
}

// The clock set back: what is made again.
func TestClockBack(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, options(day0))
	_, report := ensure(t, dir, options(day0.Add(-2*time.Hour)))
	t.Logf("2h back: %q", report)
	if slices.ContainsFunc(report, func(r string) bool { return strings.HasPrefix(r, "ca:") }) {
		t.Errorf("a clock 2h back replaced the CA (every kubeconfig handed out void): %q", report)
	}
}

// Two Ensure at once on one folder leave a PKI whose leaves verify.
func TestConcurrentEnsure(t *testing.T) {
	for i := 0; i < 10; i++ {
		dir := t.TempDir()
		var wg sync.WaitGroup
		for j := 0; j < 2; j++ {
			wg.Add(1)
			go func() { defer wg.Done(); Ensure(dir, options(day0)) }()
		}
		wg.Wait()
		_, report := ensure(t, dir, options(day0))
		if len(report) != 0 {
			t.Fatalf("run %d: after two concurrent Ensure the PKI was not valid: %q", i, report)
		}
	}
}

// The same addresses in another order are not a change.
func TestNodeIPOrder(t *testing.T) {
	dir := t.TempDir()
	ensure(t, dir, options(day0, "192.168.65.3", "fd00::3"))
	_, report := ensure(t, dir, options(day0, "fd00::3", "192.168.65.3"))
	if len(report) != 0 {
		t.Errorf("reordered node addresses made %q", report)
	}
	_, report = ensure(t, dir, options(day0, "fd00::3", "192.168.65.3", "192.168.65.3"))
	if len(report) != 0 {
		t.Errorf("a repeated node address made %q", report)
	}
}

// IPv6 node addresses and none.
func TestIPv6AndNoNodeIPs(t *testing.T) {
	p, _ := ensure(t, t.TempDir(), options(day0, "fd00::3", "192.168.65.3"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CA)
	for _, name := range []string{"apiserver", "kubelet-serving"} {
		cert, _ := readCert(p.Of(name).Cert)
		for _, ip := range []string{"fd00::3", "192.168.65.3", "127.0.0.1"} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: day0, DNSName: ip}); err != nil {
				t.Errorf("%s at %s: %v", name, ip, err)
			}
		}
	}
	p, _ = ensure(t, t.TempDir(), options(day0))
	checkChains(t, p)
	if _, _, err := Ensure(t.TempDir(), Options{NodeName: "n", NodeIPs: []net.IP{nil}, Now: day0}); err != nil {
		t.Logf("a nil node IP: %v", err)
	}
}

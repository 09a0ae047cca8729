package kubepki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ddinit/ddinit/atomicfile"
	"github.com/ddinit/ddinit/regularfile"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how long before its end a certificate is made
	// again: a cluster started monthly never meets an expired one.
	renewBefore = 30 * 24 * time.Hour
	// clockSkew backdates a leaf's NotBefore, so a clock set a little
	// back after a resume does not make a fresh certificate "not yet
	// valid"; the CA, which voids every kubeconfig when it changes, is
	// backdated by caSkew and never remade for a clock behind it.
	clockSkew = time.Hour
	caSkew    = 7 * 24 * time.Hour
	// maxFile bounds what is read of one PEM file.
	maxFile = 64 << 10
)

// Options are what the certificates must name.
type Options struct {
	// NodeName is the node's name (kubelet's identity is
	// system:node:<NodeName>).
	NodeName string
	// NodeIPs are the node's addresses, named by the API server's and
	// kubelet's serving certificates.
	NodeIPs []net.IP
	// ServiceIP is the first address of the service range, the
	// "kubernetes" Service's, named by the API server's certificate.
	ServiceIP net.IP
	// Now is the time to check validity against and to issue from.
	Now time.Time
}

// Files are the paths of one certificate and its key.
type Files struct{ Cert, Key string }

// Report says what Ensure made again, and why (empty: all was kept).
type Report []string

// PKI is the cluster's PKI as Ensure left it.
type PKI struct {
	Dir string
	// CA is the cluster CA's certificate, PEM.
	CA []byte
}

// Paths of what is in Dir.
func (p *PKI) CAFiles() Files { return files(p.Dir, "ca") }

// ServiceAccountKeys are the service-account signing key and its public
// half, PEM.
func (p *PKI) ServiceAccountKeys() (private, public string) {
	return filepath.Join(p.Dir, "sa.key"), filepath.Join(p.Dir, "sa.pub")
}

// Of is the certificate and key of a leaf (Leaves' names).
func (p *PKI) Of(name string) Files { return files(p.Dir, name) }

func files(dir, name string) Files {
	return Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// A leaf is a certificate the CA issues.
type leaf struct {
	name    string
	subject pkix.Name
	usage   []x509.ExtKeyUsage
	dns     []string
	ips     []net.IP
}

// Leaves are the names of the certificates Ensure keeps beside the CA.
func Leaves() []string {
	var names []string
	for _, l := range leaves(Options{NodeName: "node"}) {
		names = append(names, l.name)
	}
	return names
}

func leaves(o Options) []leaf {
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	apiserverIPs := append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, o.NodeIPs...)
	if o.ServiceIP != nil {
		apiserverIPs = append(apiserverIPs, o.ServiceIP)
	}
	return []leaf{
		{name: "apiserver", subject: pkix.Name{CommonName: "kube-apiserver"}, usage: server,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "kubernetes.docker.internal", "localhost", o.NodeName},
			ips: apiserverIPs},
		{name: "kubelet-serving", subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}}, usage: server,
			dns: []string{o.NodeName, "localhost"}, ips: append([]net.IP{net.IPv4(127, 0, 0, 1)}, o.NodeIPs...)},
		{name: "admin", subject: pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}}, usage: client},
		{name: "apiserver-kubelet-client", subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}}, usage: client},
		{name: "kubelet", subject: pkix.Name{CommonName: "system:node:" + o.NodeName, Organization: []string{"system:nodes"}}, usage: client},
		{name: "controller-manager", subject: pkix.Name{CommonName: "system:kube-controller-manager"}, usage: client},
		{name: "scheduler", subject: pkix.Name{CommonName: "system:kube-scheduler"}, usage: client},
		{name: "kube-proxy", subject: pkix.Name{CommonName: "system:kube-proxy"}, usage: client},
		{name: "coredns", subject: pkix.Name{CommonName: "ddinit:coredns"}, usage: client},
	}
}

// check refuses options no certificate can carry, and puts the node's
// addresses in one order (sorted, each once), so that a list given in
// another order names the same certificate.
func (o *Options) check() error {
	if o.NodeName == "" || len(o.NodeName) > 253 || strings.Trim(strings.ToLower(o.NodeName), "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" || strings.HasPrefix(o.NodeName, "-") || strings.HasPrefix(o.NodeName, ".") {
		return fmt.Errorf("kubernetes PKI: node name %q is not a DNS name", o.NodeName)
	}
	var ips []net.IP
	for _, ip := range o.NodeIPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("kubernetes PKI: node address %v is no IP address", []byte(ip))
		}
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	slices.SortFunc(ips, func(a, b net.IP) int { return bytes.Compare(a.To16(), b.To16()) })
	o.NodeIPs = ips
	if o.ServiceIP != nil && len(o.ServiceIP) != net.IPv4len && len(o.ServiceIP) != net.IPv6len {
		return fmt.Errorf("kubernetes PKI: service address %v is no IP address", []byte(o.ServiceIP))
	}
	return nil
}

// Ensure makes dir hold a valid PKI for o, keeping what already is one.
// Two at once on one folder take turns (a lock in it).
func Ensure(dir string, o Options) (*PKI, Report, error) {
	if err := o.check(); err != nil {
		return nil, nil, err
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: lock %s: %w", dir, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: lock %s: %w", dir, err)
	}
	var report Report
	ca, caKey, why := loadCA(files(dir, "ca"), o.Now)
	if why != "" {
		var err error
		if ca, caKey, err = newCA(files(dir, "ca"), o.Now); err != nil {
			return nil, report, err
		}
		report = append(report, "ca: "+why)
	}
	saReport, err := ensureServiceAccountKey(dir)
	if err != nil {
		return nil, report, err
	}
	report = append(report, saReport...)
	for _, l := range leaves(o) {
		f := files(dir, l.name)
		why := checkLeaf(f, l, ca, o.Now)
		if why == "" {
			continue
		}
		if err := issue(f, l, ca, caKey, o.Now); err != nil {
			return nil, report, err
		}
		report = append(report, l.name+": "+why)
	}
	// Keys kept from before are made owner-only if they were not.
	for _, name := range append([]string{"ca", "sa"}, Leaves()...) {
		key := filepath.Join(dir, name+".key")
		if info, err := os.Lstat(key); err == nil && info.Mode().Perm() != 0o600 {
			if err := os.Chmod(key, 0o600); err != nil {
				return nil, report, fmt.Errorf("kubernetes PKI: %w", err)
			}
			report = append(report, fmt.Sprintf("%s: %s.key was %v, made owner-only", name, name, info.Mode().Perm()))
		}
	}
	return &PKI{Dir: dir, CA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})}, report, nil
}

// readPEM is the one block of type kind in the file at path, or why not.
func readPEM(path, kind string) ([]byte, string) {
	if info, err := os.Lstat(path); err == nil && info.Mode()&fs.ModeSymlink != 0 {
		return nil, "a symlink (the PKI keeps its own files)"
	}
	b, err := regularfile.Read(path, maxFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "missing"
	}
	if err != nil {
		return nil, fmt.Sprintf("unreadable (%v)", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, "not PEM"
	}
	if block.Type != kind {
		return nil, fmt.Sprintf("a %q block, not %q", block.Type, kind)
	}
	return block.Bytes, ""
}

func readCert(path string) (*x509.Certificate, string) {
	der, why := readPEM(path, "CERTIFICATE")
	if why != "" {
		return nil, why
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Sprintf("not a certificate (%v)", err)
	}
	return c, ""
}

func readKey(path string) (*ecdsa.PrivateKey, string) {
	der, why := readPEM(path, "EC PRIVATE KEY")
	if why != "" {
		return nil, why
	}
	k, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Sprintf("not an EC key (%v)", err)
	}
	return k, ""
}

// loadKeyPair reads a certificate and its key, with why they cannot be
// used ("" when they can, as far as a pair goes).
func loadKeyPair(f Files, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	cert, why := readCert(f.Cert)
	if why != "" {
		return nil, nil, filepath.Base(f.Cert) + " " + why
	}
	key, why := readKey(f.Key)
	if why != "" {
		return nil, nil, filepath.Base(f.Key) + " " + why
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, "the key is not the certificate's"
	}
	if now.Add(renewBefore).After(cert.NotAfter) {
		return nil, nil, "ends " + cert.NotAfter.UTC().Format(time.RFC3339)
	}
	return cert, key, ""
}

func loadCA(f Files, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	cert, key, why := loadKeyPair(f, now)
	if why != "" {
		return nil, nil, why
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, "not a CA"
	}
	// A CA limited to some uses or names cannot issue every certificate
	// the cluster needs. One whose NotBefore is ahead of the clock is
	// kept: the clock is what is behind.
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 || len(cert.PermittedDNSDomains)+len(cert.ExcludedDNSDomains)+len(cert.PermittedIPRanges)+len(cert.ExcludedIPRanges) > 0 {
		return nil, nil, "a CA limited to some uses or names"
	}
	return cert, key, ""
}

func checkLeaf(f Files, l leaf, ca *x509.Certificate, now time.Time) string {
	cert, _, why := loadKeyPair(f, now)
	if why != "" {
		return why
	}
	if cert.IsCA {
		return "a CA, not a leaf"
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return "not signed by the cluster CA"
	}
	if now.Before(cert.NotBefore) {
		return "not valid before " + cert.NotBefore.UTC().Format(time.RFC3339)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	verifyAt := now
	if verifyAt.Before(ca.NotBefore) {
		verifyAt = ca.NotBefore // the clock is behind the CA's start (kept)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: verifyAt, KeyUsages: l.usage}); err != nil {
		return fmt.Sprintf("does not verify for its use (%v)", err)
	}
	if cert.Subject.CommonName != l.subject.CommonName || !slices.Equal(cert.Subject.Organization, l.subject.Organization) {
		return "names " + cert.Subject.String()
	}
	if !slices.Equal(cert.ExtKeyUsage, l.usage) {
		return "for other uses"
	}
	if !slices.Equal(cert.DNSNames, l.dns) || !slices.EqualFunc(cert.IPAddresses, l.ips, net.IP.Equal) {
		return "for other names or addresses"
	}
	return ""
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// write puts the key, then the certificate, in place: a crash between
// the two leaves a pair that does not match, made again at the next start.
func write(f Files, der []byte, key *ecdsa.PrivateKey) error {
	if err := writeKey(f.Key, key); err != nil {
		return err
	}
	if err := atomicfile.Write(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", f.Cert, err)
	}
	return nil
}

// writeKey puts a private key in place, owner-only, whole.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", path, err)
	}
	return nil
}

func newCA(f Files, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "ddinit-kubernetes-ca"},
		NotBefore:             now.Add(-caSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: CA: %w", err)
	}
	if err := write(f, der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: CA: %w", err)
	}
	return cert, key, nil
}

func issue(f Files, l leaf, ca *x509.Certificate, caKey crypto.Signer, now time.Time) error {
	key, err := newKey()
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %s key: %w", l.name, err)
	}
	sn, err := serial()
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      l.subject,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  l.usage,
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err == nil {
		_, err = x509.ParseCertificate(der) // what is written must read back
	}
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %s: %w", l.name, err)
	}
	return write(f, der, key)
}

// The service-account key signs the tokens pods are given; its public
// half is how the API server checks them. A lost or wrong public half is
// written again from the key: a new key would void every token.
func ensureServiceAccountKey(dir string) (Report, error) {
	priv, pub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	key, why := readKey(priv)
	if why != "" {
		var err error
		if key, err = newKey(); err != nil {
			return nil, fmt.Errorf("kubernetes PKI: service-account key: %w", err)
		}
		if err := writeKey(priv, key); err != nil {
			return nil, err
		}
		why = "sa: sa.key " + why
	}
	want, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("kubernetes PKI: %w", err)
	}
	der, pubWhy := readPEM(pub, "PUBLIC KEY")
	if pubWhy == "" && bytes.Equal(der, want) {
		return nil, nil // (a key just made never matches what was there)
	}
	if err := atomicfile.Write(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: want}), 0o644); err != nil {
		return nil, fmt.Errorf("kubernetes PKI: write %s: %w", pub, err)
	}
	if why != "" {
		return Report{why}, nil
	}
	if pubWhy == "" {
		pubWhy = "is not sa.key's"
	}
	return Report{"sa: sa.pub " + pubWhy + ", written again from sa.key"}, nil
}

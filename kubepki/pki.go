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
	// clockSkew backdates NotBefore, so a clock set a little back after
	// a resume does not make a fresh certificate "not yet valid".
	clockSkew = time.Hour
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

// Ensure makes dir hold a valid PKI for o, keeping what already is one.
func Ensure(dir string, o Options) (*PKI, Report, error) {
	if o.NodeName == "" {
		return nil, nil, errors.New("kubernetes PKI: no node name")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("kubernetes PKI: %w", err)
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
	if why := loadServiceAccountKey(dir); why != "" {
		if err := newServiceAccountKey(dir); err != nil {
			return nil, report, err
		}
		report = append(report, "sa: "+why)
	}
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
	return &PKI{Dir: dir, CA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})}, report, nil
}

// readPEM is the one block of type kind in the file at path, or why not.
func readPEM(path, kind string) ([]byte, string) {
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
	if now.Before(cert.NotBefore) {
		return nil, nil, "not valid before " + cert.NotBefore.UTC().Format(time.RFC3339)
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
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %w", err)
	}
	if err := atomicfile.Write(f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", f.Key, err)
	}
	if err := atomicfile.Write(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", f.Cert, err)
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
		NotBefore:             now.Add(-clockSkew),
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
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %s: %w", l.name, err)
	}
	return write(f, der, key)
}

// The service-account key signs the tokens pods are given; its public
// half is how the API server checks them.
func loadServiceAccountKey(dir string) string {
	priv, pub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	key, why := readKey(priv)
	if why != "" {
		return "sa.key " + why
	}
	der, why := readPEM(pub, "PUBLIC KEY")
	if why != "" {
		return "sa.pub " + why
	}
	want, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil || !bytes.Equal(der, want) {
		return "sa.pub is not sa.key's"
	}
	return ""
}

func newServiceAccountKey(dir string) error {
	key, err := newKey()
	if err != nil {
		return fmt.Errorf("kubernetes PKI: service-account key: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %w", err)
	}
	pb, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("kubernetes PKI: %w", err)
	}
	priv, pub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := atomicfile.Write(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", priv, err)
	}
	if err := atomicfile.Write(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pb}), 0o644); err != nil {
		return fmt.Errorf("kubernetes PKI: write %s: %w", pub, err)
	}
	return nil
}

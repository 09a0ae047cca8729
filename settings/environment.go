package settings

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Proxy is the HTTP proxy the engine, new containers and builds use.
type Proxy struct {
	HTTP  string `json:"http,omitempty"`
	HTTPS string `json:"https,omitempty"`
	// NoProxy is what the proxy is not used for, as NO_PROXY says it
	// (comma-separated names, domains, addresses, CIDRs); ddinit adds its
	// own (see Environment.NoProxy).
	NoProxy string `json:"noProxy,omitempty"`
}

// Environment is what dockerd starts with besides daemon.json: the proxy
// and the CAs it trusts beyond the version pack's bundle.
type Environment struct {
	Proxy      *Proxy
	TrustedCAs []string
}

// EnvironmentOf is the environment a document sets.
func EnvironmentOf(d Document) Environment {
	return Environment{Proxy: d.Proxy, TrustedCAs: d.TrustedCAs}
}

// Equal reports whether two environments say the same.
func (e Environment) Equal(o Environment) bool {
	a, _ := json.Marshal(e)
	b, _ := json.Marshal(o)
	return bytes.Equal(a, b)
}

// proxySchemes are the proxy URL schemes Go's proxy support (dockerd's)
// understands.
var proxySchemes = []string{"http", "https", "socks5", "socks5h"}

// ParseProxyURL reads a proxy URL as dockerd will: a scheme it knows, a
// host, a port that is a number (the scheme's when none).
func ParseProxyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	if !slices.Contains(proxySchemes, u.Scheme) {
		return nil, fmt.Errorf("want a URL such as http://proxy.corp:3128 (scheme %s), not %q", strings.Join(proxySchemes, ", "), s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q names no host", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%q: a proxy URL has no path, query or fragment", s)
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return nil, fmt.Errorf("%q: port %q is not a port number", s, p)
		}
	}
	return u, nil
}

// ParseCAs reads PEM certificates; each entry may hold several. The
// error names the entry and what is wrong.
func ParseCAs(entries []string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for i, e := range entries {
		rest := []byte(e)
		n := 0
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("entry %d: a PEM block of type %q, not CERTIFICATE (a private key must never be sent)", i, block.Type)
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("entry %d, certificate %d: %w", i, n+1, err)
			}
			certs = append(certs, c)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("entry %d holds no PEM certificate", i)
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, fmt.Errorf("entry %d: something after its last certificate that is not PEM", i)
		}
	}
	return certs, nil
}

// validateEnvironment refuses a proxy or CAs dockerd could not use.
func validateEnvironment(d Document) error {
	if p := d.Proxy; p != nil {
		for field, v := range map[string]string{"proxy.http": p.HTTP, "proxy.https": p.HTTPS} {
			if v == "" {
				continue
			}
			if _, err := ParseProxyURL(v); err != nil {
				return &Invalid{Field: field, Reason: err.Error()}
			}
		}
		if strings.ContainsFunc(p.NoProxy, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return &Invalid{Field: "proxy.noProxy", Reason: "want a comma-separated list on one line, without control characters"}
		}
	}
	if _, err := ParseCAs(d.TrustedCAs); err != nil {
		return &Invalid{Field: "trustedCAs", Reason: err.Error()}
	}
	return nil
}

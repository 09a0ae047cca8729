// Package kubeapi speaks to the cluster's API server with net/http and
// encoding/json, as a kubeconfig ddinit made says (package kubepki): the
// CA and the client credentials inline. It owns no state of the cluster
// and must not depend on client-go (its weight is a program's own).
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/ddinit/ddinit/regularfile"
)

// MaxKubeconfigBytes bounds the kubeconfig read (a CA, a certificate and
// a key inline: a few kB).
const MaxKubeconfigBytes = 1 << 20

// Kubeconfig is what the client needs of a kubeconfig: its current
// context's server, CA, and client certificate and key.
type Kubeconfig struct {
	Server    string
	CA        []byte
	Cert, Key []byte
	raw       []byte // the file as read
}

// ParseKubeconfig reads a kubeconfig as package kubepki writes it (JSON;
// the CA and the credentials inline), at its current context.
func ParseKubeconfig(b []byte) (Kubeconfig, error) {
	var doc struct {
		Clusters []struct {
			Name    string `json:"name"`
			Cluster struct {
				Server string `json:"server"`
				CA     []byte `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			Name string `json:"name"`
			User struct {
				Cert []byte `json:"client-certificate-data"`
				Key  []byte `json:"client-key-data"`
			} `json:"user"`
		} `json:"users"`
		Contexts []struct {
			Name    string `json:"name"`
			Context struct {
				Cluster string `json:"cluster"`
				User    string `json:"user"`
			} `json:"context"`
		} `json:"contexts"`
		Current string `json:"current-context"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Kubeconfig{}, fmt.Errorf("not a kubeconfig as ddinit writes them (JSON): %w", err)
	}
	kc := Kubeconfig{raw: b}
	var cluster, user string
	for _, c := range doc.Contexts {
		if c.Name == doc.Current {
			cluster, user = c.Context.Cluster, c.Context.User
		}
	}
	if cluster == "" || user == "" {
		return Kubeconfig{}, fmt.Errorf("its current context %q names no cluster and user", doc.Current)
	}
	for _, c := range doc.Clusters {
		if c.Name == cluster {
			kc.Server, kc.CA = c.Cluster.Server, c.Cluster.CA
		}
	}
	for _, u := range doc.Users {
		if u.Name == user {
			kc.Cert, kc.Key = u.User.Cert, u.User.Key
		}
	}
	switch {
	case kc.Server == "":
		return Kubeconfig{}, fmt.Errorf("cluster %q has no server", cluster)
	case len(kc.CA) == 0:
		return Kubeconfig{}, fmt.Errorf("cluster %q has no certificate-authority-data", cluster)
	case len(kc.Cert) == 0 || len(kc.Key) == 0:
		return Kubeconfig{}, fmt.Errorf("user %q has no client-certificate-data and client-key-data", user)
	}
	return kc, nil
}

// Client speaks to the API server as the kubeconfig at path says, but
// always dials addr: the kubeconfig names the server as the distros reach
// it (https://127.0.0.1:6443, what its certificate names), ddinit run
// reaches it across the link. The kubeconfig is read again at each list:
// a reset of the cluster makes new credentials.
type Client struct {
	path string
	addr string

	mu     sync.Mutex
	kc     Kubeconfig
	client *http.Client
}

// ErrGone is a watch whose resourceVersion is too old (410 Gone): what
// happened since is to be listed again.
var ErrGone = errors.New("the resourceVersion is too old (410 Gone)")

// New is a client for the kubeconfig at path that dials addr.
func New(path, addr string) *Client { return &Client{path: path, addr: addr} }

// Server is the kubeconfig's server URL as last read.
func (a *Client) Server() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kc.Server
}

// current is the client for the kubeconfig as the file holds it now.
func (a *Client) current(reload bool) (*http.Client, Kubeconfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client != nil && !reload {
		return a.client, a.kc, nil
	}
	b, err := regularfile.Read(a.path, MaxKubeconfigBytes)
	if err != nil {
		return nil, Kubeconfig{}, fmt.Errorf("the admin kubeconfig: %w", err)
	}
	if a.client != nil && bytes.Equal(b, a.kc.raw) {
		return a.client, a.kc, nil
	}
	kc, err := ParseKubeconfig(b)
	if err != nil {
		return nil, Kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: %w", a.path, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(kc.CA) {
		return nil, Kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: its certificate-authority-data holds no certificate", a.path)
	}
	cert, err := tls.X509KeyPair(kc.Cert, kc.Key)
	if err != nil {
		return nil, Kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: its client credentials: %w", a.path, err)
	}
	addr := a.addr
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:       &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	if a.client != nil {
		a.client.CloseIdleConnections()
	}
	a.client, a.kc = &http.Client{Transport: t}, kc
	return a.client, kc, nil
}

// Close lets the idle connections go.
func (a *Client) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client != nil {
		a.client.CloseIdleConnections()
	}
}

// Do sends one request to the API server: method, path and query, body
// (JSON, or a merge patch with PATCH); it returns the answer of a 2xx, and
// an error naming the status and the API's message otherwise.
func (a *Client) Do(ctx context.Context, reload bool, method, path string, query url.Values, body []byte) (*http.Response, error) {
	ctype := "application/json"
	if method == http.MethodPatch {
		ctype = "application/merge-patch+json"
	}
	return a.send(ctx, reload, method, path, query, body, ctype)
}

// Apply makes the object at path (its kind's URL with its name) what body
// says, by server-side apply as manager: created if it is missing,
// changed where it differs, other managers' fields kept.
func (a *Client) Apply(ctx context.Context, manager, path string, body []byte) error {
	resp, err := a.send(ctx, false, http.MethodPatch, path, url.Values{"fieldManager": {manager}, "force": {"true"}}, body, "application/apply-patch+yaml")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (a *Client) send(ctx context.Context, reload bool, method, path string, query url.Values, body []byte, ctype string) (*http.Response, error) {
	c, kc, err := a.current(reload)
	if err != nil {
		return nil, err
	}
	u := kc.Server + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ddinit")
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var st Status
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, &st)
		if resp.StatusCode == http.StatusGone {
			return nil, fmt.Errorf("%s %s: %w: %s", method, path, ErrGone, st.Message)
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, st.Message)
	}
	return resp, nil
}

// Status is the API's error object (kind Status).
type Status struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

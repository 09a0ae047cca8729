package kubeports

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
	"strconv"
	"sync"
	"time"

	"github.com/ddinit/ddinit/regularfile"
)

// maxKubeconfigBytes bounds the kubeconfig read (a CA, a certificate and
// a key inline: a few kB).
const maxKubeconfigBytes = 1 << 20

// kubeconfig is what the client needs of a kubeconfig: its current
// context's server, CA, and client certificate and key.
type kubeconfig struct {
	server    string
	ca        []byte
	cert, key []byte
	raw       []byte // the file as read
}

// parseKubeconfig reads a kubeconfig as package kubepki writes it (JSON;
// the CA and the credentials inline), at its current context.
func parseKubeconfig(b []byte) (kubeconfig, error) {
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
		return kubeconfig{}, fmt.Errorf("not a kubeconfig as ddinit writes them (JSON): %w", err)
	}
	kc := kubeconfig{raw: b}
	var cluster, user string
	for _, c := range doc.Contexts {
		if c.Name == doc.Current {
			cluster, user = c.Context.Cluster, c.Context.User
		}
	}
	if cluster == "" || user == "" {
		return kubeconfig{}, fmt.Errorf("its current context %q names no cluster and user", doc.Current)
	}
	for _, c := range doc.Clusters {
		if c.Name == cluster {
			kc.server, kc.ca = c.Cluster.Server, c.Cluster.CA
		}
	}
	for _, u := range doc.Users {
		if u.Name == user {
			kc.cert, kc.key = u.User.Cert, u.User.Key
		}
	}
	switch {
	case kc.server == "":
		return kubeconfig{}, fmt.Errorf("cluster %q has no server", cluster)
	case len(kc.ca) == 0:
		return kubeconfig{}, fmt.Errorf("cluster %q has no certificate-authority-data", cluster)
	case len(kc.cert) == 0 || len(kc.key) == 0:
		return kubeconfig{}, fmt.Errorf("user %q has no client-certificate-data and client-key-data", user)
	}
	return kc, nil
}

// apiClient speaks to the API server as the kubeconfig at path says, but
// always dials addr: the kubeconfig names the server as the distros reach
// it (https://127.0.0.1:6443, what its certificate names), ddinit run
// reaches it across the link. The kubeconfig is read again at each list:
// a reset of the cluster makes new credentials.
type apiClient struct {
	path string
	addr string

	mu     sync.Mutex
	kc     kubeconfig
	client *http.Client
}

// watchTimeout is how long the API server keeps one watch open: a watch
// that died silently (the link) is noticed within it.
const watchTimeout = 5 * time.Minute

// errGone is a watch whose resourceVersion is too old (410 Gone): what
// happened since is to be listed again.
var errGone = errors.New("the resourceVersion is too old (410 Gone)")

// current is the client for the kubeconfig as the file holds it now.
func (a *apiClient) current(reload bool) (*http.Client, kubeconfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client != nil && !reload {
		return a.client, a.kc, nil
	}
	b, err := regularfile.Read(a.path, maxKubeconfigBytes)
	if err != nil {
		return nil, kubeconfig{}, fmt.Errorf("the admin kubeconfig: %w", err)
	}
	if a.client != nil && bytes.Equal(b, a.kc.raw) {
		return a.client, a.kc, nil
	}
	kc, err := parseKubeconfig(b)
	if err != nil {
		return nil, kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: %w", a.path, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(kc.ca) {
		return nil, kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: its certificate-authority-data holds no certificate", a.path)
	}
	cert, err := tls.X509KeyPair(kc.cert, kc.key)
	if err != nil {
		return nil, kubeconfig{}, fmt.Errorf("the admin kubeconfig %s: its client credentials: %w", a.path, err)
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

// close lets the idle connections go.
func (a *apiClient) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client != nil {
		a.client.CloseIdleConnections()
	}
}

// do sends one request to the API server: method, path and query, body
// (JSON, or a merge patch with PATCH); it returns the answer of a 2xx, and
// an error naming the status and the API's message otherwise.
func (a *apiClient) do(ctx context.Context, reload bool, method, path string, query url.Values, body []byte) (*http.Response, error) {
	c, kc, err := a.current(reload)
	if err != nil {
		return nil, err
	}
	u := kc.server + path
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
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var st status
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		json.Unmarshal(b, &st)
		if resp.StatusCode == http.StatusGone {
			return nil, fmt.Errorf("%s %s: %w: %s", method, path, errGone, st.Message)
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, st.Message)
	}
	return resp, nil
}

// status is the API's error object (kind Status).
type status struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// list reads every Service and the resourceVersion to watch from; the
// kubeconfig is read again first.
func (a *apiClient) list(ctx context.Context) (string, []service, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.do(ctx, true, http.MethodGet, "/api/v1/services", nil, nil)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	var l struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Items []service `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return "", nil, fmt.Errorf("the list of Services: %w", err)
	}
	return l.Metadata.ResourceVersion, l.Items, nil
}

// event is one change a watch reports: ADDED, MODIFIED, DELETED (with the
// Service), or BOOKMARK (only a newer resourceVersion).
type event struct {
	Type    string
	Service service
}

// watch follows the Services from rv, calling each for every change, in
// order, until the stream ends: nil when the API server ended it (its
// timeout: watch again from the last resourceVersion), errGone when rv is
// too old, another error when it broke.
func (a *apiClient) watch(ctx context.Context, rv string, each func(event)) error {
	ctx, cancel := context.WithTimeout(ctx, watchTimeout+30*time.Second)
	defer cancel()
	q := url.Values{
		"watch":               {"1"},
		"resourceVersion":     {rv},
		"allowWatchBookmarks": {"true"},
		"timeoutSeconds":      {strconv.Itoa(int(watchTimeout / time.Second))},
	}
	resp, err := a.do(ctx, false, http.MethodGet, "/api/v1/services", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The watch framing: one JSON object a change, {"type": …, "object": …}.
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("the watch of Services broke: %w", err)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED", "DELETED", "BOOKMARK":
			var s service
			if err := json.Unmarshal(ev.Object, &s); err != nil {
				return fmt.Errorf("the watch of Services sent a %s that is no Service: %w", ev.Type, err)
			}
			each(event{Type: ev.Type, Service: s})
		case "ERROR":
			var st status
			json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				return fmt.Errorf("the watch of Services: %w: %s", errGone, st.Message)
			}
			return fmt.Errorf("the watch of Services: error %d %s: %s", st.Code, st.Reason, st.Message)
		default:
			return fmt.Errorf("the watch of Services sent an event of no known type %q", ev.Type)
		}
	}
}

// patchIngress sets a Service's status.loadBalancer.ingress to localhost
// (ingressPatch, a merge patch of its status subresource).
func (a *apiClient) patchIngress(ctx context.Context, namespace, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/services/" + url.PathEscape(name) + "/status"
	resp, err := a.do(ctx, false, http.MethodPatch, path, nil, []byte(ingressPatch))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.Body.Close()
}

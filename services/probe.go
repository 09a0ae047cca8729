package services

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ddinit/ddinit/transport"
)

// ParseProbe reads "http+unix:///sock:/path", "http://host:port/path",
// "https://host:port/path" or "unix:///sock".
func ParseProbe(s string) (Probe, error) {
	switch {
	case strings.HasPrefix(s, "http+unix://"):
		rest := strings.TrimPrefix(s, "http+unix://")
		i := strings.LastIndex(rest, ":/")
		if i <= 0 {
			return Probe{}, fmt.Errorf("%q: want http+unix:///socket:/path", s)
		}
		return Probe{Socket: rest[:i], Path: rest[i+1:]}, nil
	case strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Port() == "" || u.Hostname() == "" {
			return Probe{}, fmt.Errorf("%q: want %s://host:port/path", s, u.Scheme)
		}
		path := u.EscapedPath()
		if path == "" {
			path = "/"
		}
		return Probe{Addr: u.Host, Path: path, TLS: u.Scheme == "https"}, nil
	case strings.HasPrefix(s, "unix://"):
		return Probe{Socket: strings.TrimPrefix(s, "unix://")}, nil
	}
	return Probe{}, fmt.Errorf("%q: want http+unix:///socket:/path, http(s)://host:port/path or unix:///socket", s)
}

// Answers reports whether the probe needs a reply (HTTP), not just a
// connect: the kernel accepts connections for a process that is stopped.
func (p Probe) Answers() bool { return p.Path != "" }

func (p Probe) String() string {
	switch {
	case p.Addr != "" && p.TLS:
		return "https://" + p.Addr + p.Path
	case p.Addr != "":
		return "http://" + p.Addr + p.Path
	case p.Path == "":
		return "unix://" + p.Socket
	}
	return "http+unix://" + p.Socket + ":" + p.Path
}

func (p Probe) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	if p.Addr != "" {
		return d.DialContext(ctx, "tcp", p.Addr)
	}
	return transport.DialUnix(ctx, p.Socket)
}

// Check runs the probe once, within ctx's deadline.
func (p Probe) Check(ctx context.Context) error {
	if p.Path == "" {
		c, err := p.dial(ctx)
		if err != nil {
			return err
		}
		return c.Close()
	}
	t := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return p.dial(ctx) },
		DisableKeepAlives: true,
	}
	scheme := "http"
	if p.TLS {
		// The probe asks whether the service answers, not who it is: it
		// dials an address in ddinit's own namespace, and the Kubernetes
		// components serve their health on certificates of their own
		// making (the scheduler's, the controller manager's).
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		scheme = "https"
	}
	client := &http.Client{Transport: t}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://service"+p.Path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.Path, unwrapURLError(err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %s", p.Path, resp.Status)
	}
	return nil
}

// unwrapURLError drops net/http's "Get \"http://service/_ping\":" prefix,
// which names a host that does not exist.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

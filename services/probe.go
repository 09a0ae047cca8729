package services

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Probe checks that a service answers.
type Probe struct {
	Socket string // unix socket path inside the namespace
	Path   string // HTTP path; empty means a connect is enough
}

// ParseProbe reads "http+unix:///sock:/path" or "unix:///sock".
func ParseProbe(s string) (Probe, error) {
	switch {
	case strings.HasPrefix(s, "http+unix://"):
		rest := strings.TrimPrefix(s, "http+unix://")
		i := strings.LastIndex(rest, ":/")
		if i <= 0 {
			return Probe{}, fmt.Errorf("%q: want http+unix:///socket:/path", s)
		}
		return Probe{Socket: rest[:i], Path: rest[i+1:]}, nil
	case strings.HasPrefix(s, "unix://"):
		return Probe{Socket: strings.TrimPrefix(s, "unix://")}, nil
	}
	return Probe{}, fmt.Errorf("%q: want http+unix:///socket:/path or unix:///socket", s)
}

func (p Probe) String() string {
	if p.Path == "" {
		return "unix://" + p.Socket
	}
	return "http+unix://" + p.Socket + ":" + p.Path
}

// Check runs the probe once.
func (p Probe) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if p.Path == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p.Socket)
		if err != nil {
			return err
		}
		return c.Close()
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.Socket)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://service"+p.Path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", p, resp.Status)
	}
	return nil
}

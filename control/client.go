package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ddinit/ddinit/transport"
)

// Client talks to the control API.
type Client struct {
	Addr transport.Addr
	http *http.Client
}

// NewClient makes a client for addr. timeout bounds each request, except
// the streaming ones (logs -f).
func NewClient(addr string, timeout time.Duration) (*Client, error) {
	a, err := transport.Parse(addr)
	if err != nil {
		return nil, err
	}
	c := &Client{Addr: a}
	c.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return transport.DialContext(ctx, a)
			},
			DisableKeepAlives: true,
		},
	}
	return c, nil
}

// Do sends a request to the control API.
func (c *Client) Do(ctx context.Context, method, path string, stream bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ddinit"+path, nil)
	if err != nil {
		return nil, err
	}
	hc := c.http
	if stream {
		copy := *c.http
		copy.Timeout = 0
		hc = &copy
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("control API at %s: %w", c.Addr, unwrapURLError(err))
	}
	return resp, nil
}

// Status fetches GET /status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	return st, c.getJSON(ctx, "/status", &st)
}

// Settings fetches GET /settings.
func (c *Client) Settings(ctx context.Context) (Settings, error) {
	var st Settings
	return st, c.getJSON(ctx, "/settings", &st)
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.Do(ctx, http.MethodGet, path, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return responseError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("control API at %s: %s: %w", c.Addr, path, err)
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// HTTP is the client's HTTP client, for requests Do does not make.
func (c *Client) HTTP() *http.Client { return c.http }

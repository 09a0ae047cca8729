package engineclient

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sirupsen/logrus"
)

// Client is ddinit's own client of the docker engine's API: the requests
// it makes for itself (the port publisher, a distro proxy following
// containers), each on a connection of its own that is closed after it.
type Client struct {
	http, stream *http.Client
}

// InternalHeader marks ddinit's own requests (Client's): an API proxy
// neither counts them as a client keeping the engine up nor wakes a
// stopped engine for them; they wait for it. Only a proxy that trusts its
// clients (Proxy.Trusted: ddinit's own socket for the distros' proxies)
// honours it; every other strips it, so a client cannot pass for ddinit.
const InternalHeader = "X-Ddinit-Internal"

// ClientHeader names who a request comes from, as a proxy that passes it
// on says (a distro's proxy: "distro/Ubuntu"): the proxy after it shares
// its budgets by that name, so that many connections from one distro take
// one share. Honoured, and stripped, as InternalHeader.
const ClientHeader = "X-Ddinit-Client"

// request is a request of ddinit's own, marked so.
func request(ctx context.Context, method, path string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil) // a fixed URL always parses
	req.Header.Set(InternalHeader, "1")
	return req
}

// internalKey marks a context whose dial is for ddinit's own requests.
type internalKey struct{}

// Internal reports whether ctx dials for one of ddinit's own requests
// (the proxy passes that on to its Dial).
func Internal(ctx context.Context) bool { return ctx.Value(internalKey{}) != nil }

// WithInternal marks ctx as dialling for one of ddinit's own requests.
func WithInternal(ctx context.Context) context.Context {
	return context.WithValue(ctx, internalKey{}, true)
}

// New makes a client that reaches the engine through dial.
func New(dial func(ctx context.Context) (net.Conn, error)) *Client {
	client := func(timeout time.Duration) *http.Client {
		return &http.Client{Timeout: timeout, Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			DisableKeepAlives: true,
		}}
	}
	return &Client{http: client(30 * time.Second), stream: client(0)}
}

// Get asks for path and decodes the JSON answer into v.
func (e *Client) Get(ctx context.Context, path string, v any) error {
	resp, err := e.http.Do(request(ctx, http.MethodGet, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Post sends an empty POST to path and returns the answer's status.
func (e *Client) Post(ctx context.Context, path string) (int, error) {
	resp, err := e.http.Do(request(ctx, http.MethodPost, path))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ShortID is a container id's first 12 characters, as docker shows them.
func ShortID(id string) string { return id[:min(12, len(id))] }

// Event is one of the engine's events.
type Event struct {
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
}

// Events follows the engine's events that filters (the API's JSON)
// select: opened calls back once the stream is open (so nothing after
// it is missed), then each event is handed to fn, until the stream or
// ctx ends; the error says why.
func (e *Client) Events(ctx context.Context, filters string, opened func() error, fn func(Event)) error {
	resp, err := e.stream.Do(request(ctx, http.MethodGet, "/events?filters="+url.QueryEscape(filters)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: %s", resp.Status)
	}
	if opened != nil {
		if err := opened(); err != nil {
			return err
		}
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			return err
		}
		fn(ev)
	}
}

// Follow follows the engine's events until ctx ends: each time the stream
// opens, opened runs first (to catch up with what was missed while it was
// closed: at the start, and whenever the engine comes back), then fn for
// each event. A stream that breaks is opened again after a backoff: from
// 100 ms, doubling to 2 s, and from 100 ms again once one had opened.
func (e *Client) Follow(ctx context.Context, filters string, opened func() error, fn func(Event), log logrus.FieldLogger) {
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		wasOpen := false
		err := e.Events(ctx, filters, func() error {
			wasOpen = true
			if opened != nil {
				return opened()
			}
			return nil
		}, fn)
		if ctx.Err() != nil {
			return
		}
		if wasOpen {
			delay = 100 * time.Millisecond
		}
		log.WithError(err).Debug("engine events ended; following again")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

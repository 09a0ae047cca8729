package network

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ddinit/ddinit/vsock"
	"github.com/sirupsen/logrus"
)

// Publisher makes the ports containers publish inside reachable in the
// distro's namespace: for every binding HostIP:HostPort of a running
// container it listens there and forwards to the namespace's address on
// the same port (where dockerd publishes it). It follows docker's events
// API, not a polling loop, and resynchronises whenever the stream breaks.
type Publisher struct {
	DockerSocket string     // path of dockerd's API socket
	Target       netip.Addr // the namespace's address
	Log          logrus.FieldLogger

	mu     sync.Mutex
	open   map[string]*published // binding key -> listener
	http   *http.Client
	stream *http.Client
}

type published struct {
	container string
	closer    io.Closer
}

type binding struct {
	Container string
	Proto     string // tcp or udp
	HostIP    string
	HostPort  int
}

func (b binding) key() string {
	return fmt.Sprintf("%s/%s:%d", b.Proto, b.HostIP, b.HostPort)
}

func (p *Publisher) client() *http.Client { return p.http }

// newClient makes an API client for dockerd's socket. Requests close their
// connection: the publisher asks rarely, and keeps nothing idle.
func (p *Publisher) newClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p.DockerSocket)
		},
		DisableKeepAlives: true,
	}}
}

// Run follows docker until ctx ends, then closes every listener.
func (p *Publisher) Run(ctx context.Context) {
	p.mu.Lock()
	p.open = map[string]*published{}
	p.http, p.stream = p.newClient(30*time.Second), p.newClient(0)
	p.mu.Unlock()
	defer p.closeAll()
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := p.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		p.Log.WithError(err).Debug("docker events stream ended; resynchronising")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// follow opens the events stream, then brings the listeners in line with
// the running containers (so nothing started in between is missed), then
// applies events until the stream breaks.
func (p *Publisher) follow(ctx context.Context) error {
	filters := url.QueryEscape(`{"type":["container"],"event":["start","die"]}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/events?filters="+filters, nil)
	resp, err := p.stream.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: %s", resp.Status)
	}
	if err := p.sync(ctx); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	for {
		var ev struct {
			Action string `json:"Action"`
			Actor  struct {
				ID string `json:"ID"`
			} `json:"Actor"`
		}
		if err := dec.Decode(&ev); err != nil {
			return err
		}
		switch ev.Action {
		case "start":
			bs, err := p.bindings(ctx, ev.Actor.ID)
			if err != nil {
				p.Log.WithError(err).WithField("container", short(ev.Actor.ID)).Warn("cannot read a started container's ports")
				continue
			}
			p.publish(bs)
		case "die":
			p.unpublish(func(pub *published) bool { return pub.container == ev.Actor.ID })
		}
	}
}

// sync publishes what running containers bind and drops the rest.
func (p *Publisher) sync(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/json", nil)
	resp, err := p.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var list []struct {
		ID    string `json:"Id"`
		Ports []struct {
			IP          string `json:"IP"`
			PublicPort  int    `json:"PublicPort"`
			PrivatePort int    `json:"PrivatePort"`
			Type        string `json:"Type"`
		} `json:"Ports"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return fmt.Errorf("containers: %w", err)
	}
	running := map[string]bool{}
	var all []binding
	for _, c := range list {
		running[c.ID] = true
		for _, port := range c.Ports {
			if port.PublicPort != 0 {
				all = append(all, binding{Container: c.ID, Proto: port.Type, HostIP: port.IP, HostPort: port.PublicPort})
			}
		}
	}
	p.unpublish(func(pub *published) bool { return !running[pub.container] })
	p.publish(all)
	return nil
}

// bindings reads a container's published ports.
func (p *Publisher) bindings(ctx context.Context, id string) ([]binding, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/containers/"+url.PathEscape(id)+"/json", nil)
	resp, err := p.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var c struct {
		NetworkSettings struct {
			Ports map[string][]struct {
				HostIP   string `json:"HostIp"`
				HostPort string `json:"HostPort"`
			} `json:"Ports"`
		} `json:"NetworkSettings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return nil, err
	}
	var out []binding
	for spec, hosts := range c.NetworkSettings.Ports {
		_, proto, _ := strings.Cut(spec, "/")
		for _, h := range hosts {
			port, err := strconv.Atoi(h.HostPort)
			if err != nil || port == 0 {
				continue
			}
			out = append(out, binding{Container: id, Proto: proto, HostIP: h.HostIP, HostPort: port})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, nil
}

func (p *Publisher) publish(bs []binding) {
	for _, b := range bs {
		if strings.Contains(b.HostIP, ":") {
			// docker lists a "::" binding beside each "0.0.0.0" one; the
			// wildcard listener below is dual-stack (Go listens on [::]
			// without IPV6_V6ONLY), so it already serves both.
			continue
		}
		host := b.HostIP
		if host == "" {
			host = "0.0.0.0"
		}
		p.mu.Lock()
		_, exists := p.open[b.key()]
		p.mu.Unlock()
		if exists {
			continue
		}
		addr := net.JoinHostPort(host, strconv.Itoa(b.HostPort))
		target := net.JoinHostPort(p.Target.String(), strconv.Itoa(b.HostPort))
		log := p.Log.WithFields(logrus.Fields{"container": short(b.Container), "port": b.key()})
		var closer io.Closer
		switch b.Proto {
		case "tcp":
			l, err := net.Listen("tcp", addr)
			if err != nil {
				log.WithError(err).Warn("cannot publish the port in the distro (in use?)")
				continue
			}
			f := &vsock.Forwarder{Listener: l, Log: log, Dial: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", target)
			}}
			go f.Serve(context.Background())
			closer = l
		case "udp":
			u, err := newUDPRelay(addr, target)
			if err != nil {
				log.WithError(err).Warn("cannot publish the port in the distro (in use?)")
				continue
			}
			closer = u
		default:
			continue
		}
		p.mu.Lock()
		p.open[b.key()] = &published{container: b.Container, closer: closer}
		p.mu.Unlock()
		log.Info("port published")
	}
}

func (p *Publisher) unpublish(match func(*published) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pub := range p.open {
		if match(pub) {
			pub.closer.Close()
			delete(p.open, k)
			p.Log.WithFields(logrus.Fields{"container": short(pub.container), "port": k}).Info("port closed")
		}
	}
}

func (p *Publisher) closeAll() { p.unpublish(func(*published) bool { return true }) }

// Published lists the open bindings, for status and tests.
func (p *Publisher) Published() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k := range p.open {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// short is a container id's first 12 characters, as docker shows them.
func short(id string) string { return id[:min(12, len(id))] }

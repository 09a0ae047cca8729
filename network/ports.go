package network

import (
	"context"
	"errors"
	"fmt"
	"github.com/ddinit/ddinit/engineclient"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ddinit/ddinit/dockerproxy"
	"github.com/ddinit/ddinit/transport"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netns"
)

// Publisher makes the ports containers publish inside reachable in the
// distro's namespace: for every binding HostIP:HostPort of a running
// container it listens on the same address family, address and port in
// the distro and carries each connection to where dockerd publishes it
// (RouteOf). It follows docker's events API, not a polling loop, and
// resynchronises whenever the stream breaks.
type Publisher struct {
	DockerSocket string // path of dockerd's API socket
	// Dial, when set, dials dockerd instead of DockerSocket: one that
	// waits while the engine is stopped on purpose, so that the events are
	// followed again the moment it is back, not at the next retry.
	Dial   func(ctx context.Context) (net.Conn, error)
	Target netip.Addr // the namespace's address
	// Namespace is the engine's network namespace (/proc/PID/ns/net),
	// where bindings to a specific address are dialled.
	Namespace string
	Log       logrus.FieldLogger

	once   sync.Once
	mu     sync.Mutex
	open   map[string]*published // binding key -> listener
	engine *engineclient.Client
	ns     netns.NsHandle
	nsErr  error
}

// setUp makes the publisher's state, once: Run and Reserve may come first.
func (p *Publisher) setUp() {
	p.once.Do(func() {
		p.open = map[string]*published{}
		// The publisher asks rarely, and keeps no connection idle.
		dial := p.Dial
		if dial == nil {
			dial = func(ctx context.Context) (net.Conn, error) { return transport.DialUnix(ctx, p.DockerSocket) }
		}
		p.engine = engineclient.New(dial)
		p.ns, p.nsErr = netns.None(), errors.New("no network namespace given")
		if p.Namespace != "" {
			p.ns, p.nsErr = netns.GetFromPath(p.Namespace)
		}
	})
}

type published struct {
	container string
	key       string
	closer    io.Closer
	warned    atomic.Bool // a connection that could not reach the container was logged
}

type binding struct {
	Container string
	Name      string // the container's name, for errors
	Proto     string // tcp or udp
	HostIP    string
	HostPort  int
}

// addr is where the binding listens in the distro, as docker names it.
func (b binding) addr() string {
	host := b.HostIP
	if host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, strconv.Itoa(b.HostPort))
}

// hasTwin reports a "::" binding beside a "0.0.0.0" (or unnamed) one of
// the same protocol and port among bs: docker lists both by default.
func (b binding) hasTwin(bs []binding) bool {
	return b.HostIP == "::" && slices.ContainsFunc(bs, func(o binding) bool {
		return o.Container == b.Container && o.Proto == b.Proto && o.HostPort == b.HostPort && (o.HostIP == "" || o.HostIP == "0.0.0.0")
	})
}

// key names a binding's listener: docker says "" (a configured binding)
// and "0.0.0.0" (a running one) for the same.
func (b binding) key() string {
	host := b.HostIP
	if host == "" {
		host = "0.0.0.0"
	}
	return fmt.Sprintf("%s/%s:%d", b.Proto, host, b.HostPort)
}

// Run follows docker until ctx ends, then closes every listener. Each
// time the events open, the listeners are brought in line with the
// running containers first, so nothing started in between is missed.
func (p *Publisher) Run(ctx context.Context) {
	p.setUp()
	defer p.closeAll()
	p.engine.Follow(ctx, `{"type":["container"],"event":["start","die"]}`,
		func() error { return p.sync(ctx) },
		func(ev engineclient.Event) {
			switch ev.Action {
			case "start":
				bs, err := p.bindings(ctx, ev.Actor.ID)
				if err != nil {
					p.Log.WithError(err).WithField("container", engineclient.ShortID(ev.Actor.ID)).Warn("cannot read a started container's ports")
					return
				}
				p.publish(bs)
			case "die":
				p.unpublish(func(pub *published) bool { return pub.container == ev.Actor.ID })
			}
		}, p.Log)
}

// sync publishes what running containers bind and drops the rest.
func (p *Publisher) sync(ctx context.Context) error {
	var list []struct {
		ID    string `json:"Id"`
		Ports []struct {
			IP          string `json:"IP"`
			PublicPort  int    `json:"PublicPort"`
			PrivatePort int    `json:"PrivatePort"`
			Type        string `json:"Type"`
		} `json:"Ports"`
	}
	if err := p.engine.Get(ctx, "/containers/json", &list); err != nil {
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
	var c struct {
		NetworkSettings struct {
			Ports map[string][]struct {
				HostIP   string `json:"HostIp"`
				HostPort string `json:"HostPort"`
			} `json:"Ports"`
		} `json:"NetworkSettings"`
	}
	if err := p.engine.Get(ctx, "/containers/"+url.PathEscape(id)+"/json", &c); err != nil {
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

// Reserve publishes a container's configured ports before it starts, so
// that a port something else in the distro holds fails the start (as on
// Docker Engine) instead of leaving the container to answer nowhere. The
// start event finds them published already; release, when the start did
// not happen, closes them again.
func (p *Publisher) Reserve(ctx context.Context, container string) (func(), error) {
	p.setUp()
	bs, id, err := p.configured(ctx, container)
	if err != nil {
		return nil, err
	}
	made, err := p.publishAll(bs)
	if err != nil {
		return nil, err
	}
	// Only what this reservation opened closes again: a container
	// already running keeps its ports.
	return func() {
		p.unpublish(func(pub *published) bool { return pub.container == id && slices.Contains(made, pub.key) })
	}, nil
}

// configured reads the port bindings a container asks for (its
// HostConfig: a container not yet started has no others) and its full id.
func (p *Publisher) configured(ctx context.Context, container string) ([]binding, string, error) {
	var c struct {
		ID         string `json:"Id"`
		Name       string `json:"Name"`
		HostConfig struct {
			PortBindings map[string][]struct {
				HostIP   string `json:"HostIp"`
				HostPort string `json:"HostPort"`
			} `json:"PortBindings"`
		} `json:"HostConfig"`
	}
	if err := p.engine.Get(ctx, "/containers/"+url.PathEscape(container)+"/json", &c); err != nil {
		return nil, "", err
	}
	var out []binding
	for spec, hosts := range c.HostConfig.PortBindings {
		_, proto, _ := strings.Cut(spec, "/")
		for _, h := range hosts {
			// A range or an empty port is docker's to choose at start.
			port, err := strconv.Atoi(h.HostPort)
			if err != nil || port == 0 {
				continue
			}
			out = append(out, binding{Container: c.ID, Name: strings.TrimPrefix(c.Name, "/"), Proto: proto, HostIP: h.HostIP, HostPort: port})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, c.ID, nil
}

// publishAll publishes every binding or, when one cannot be (its port is
// taken), none, and says which; it returns the keys it opened.
func (p *Publisher) publishAll(bs []binding) ([]string, error) {
	var made []string
	for _, b := range bs {
		key, fresh, err := p.publishOne(b, b.hasTwin(bs))
		if err != nil {
			p.unpublish(func(pub *published) bool { return slices.Contains(made, pub.key) })
			return nil, &dockerproxy.PortTakenError{Container: b.Name + " (" + engineclient.ShortID(b.Container) + ")", Addr: b.addr(), Err: err}
		}
		if fresh {
			made = append(made, key)
		}
	}
	return made, nil
}

func (p *Publisher) publish(bs []binding) {
	for _, b := range bs {
		if _, _, err := p.publishOne(b, b.hasTwin(bs)); err != nil {
			p.Log.WithError(err).WithFields(logrus.Fields{"container": engineclient.ShortID(b.Container), "port": b.key()}).Warn("cannot publish the port in the distro (in use?)")
		}
	}
}

// publishOne listens on one binding in the distro, unless it is open
// already (or served by its twin's listener); fresh says it was opened
// now.
func (p *Publisher) publishOne(b binding, twin bool) (key string, fresh bool, err error) {
	route, ok := RouteOf(b.HostIP, b.HostPort, p.Target, twin)
	if !ok {
		return "", false, nil
	}
	key = b.key()
	p.mu.Lock()
	_, exists := p.open[key]
	p.mu.Unlock()
	if exists {
		return key, false, nil
	}
	log := p.Log.WithFields(logrus.Fields{"container": engineclient.ShortID(b.Container), "port": key, "to": route.Dial})
	pub := &published{container: b.Container, key: key}
	// A connection that cannot reach the container is closed at once;
	// why is logged once for the binding.
	dial := func(ctx context.Context, network string) (net.Conn, error) {
		var c net.Conn
		var err error
		if route.InNamespace {
			if p.nsErr != nil {
				err = p.nsErr
			} else {
				c, err = DialIn(ctx, p.ns, network, route.Dial)
			}
		} else {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, route.Dial)
		}
		if err != nil && pub.warned.CompareAndSwap(false, true) {
			log.WithError(err).Warn("a connection to a published port cannot reach its container")
		}
		return c, err
	}
	if b.Proto != "tcp" && b.Proto != "udp" {
		return key, false, nil // sctp: not carried
	}
	closer, err := transport.ForwardPort(b.Proto, route.Listen, func(ctx context.Context) (net.Conn, error) { return dial(ctx, b.Proto) }, log)
	if err != nil {
		return key, false, err
	}
	pub.closer = closer
	p.mu.Lock()
	p.open[key] = pub
	p.mu.Unlock()
	log.Info("port published")
	return key, true, nil
}

func (p *Publisher) unpublish(match func(*published) bool) {
	p.mu.Lock()
	var closing []*published
	for k, pub := range p.open {
		if match(pub) {
			closing = append(closing, pub)
			delete(p.open, k)
		}
	}
	p.mu.Unlock()
	// Closed outside the lock: a listener waits for its connections.
	for _, pub := range closing {
		pub.closer.Close()
		p.Log.WithFields(logrus.Fields{"container": engineclient.ShortID(pub.container), "port": pub.key}).Info("port closed")
	}
}

func (p *Publisher) closeAll() {
	p.unpublish(func(*published) bool { return true })
	if p.nsErr == nil {
		p.ns.Close()
	}
}

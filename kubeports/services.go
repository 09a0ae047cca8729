package kubeports

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// service is what is read of a Kubernetes Service: its name, its type and
// ports, and where its status says it is reached.
type service struct {
	Metadata struct {
		Namespace       string `json:"namespace"`
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		Type  string        `json:"type"`
		Ports []servicePort `json:"ports"`
	} `json:"spec"`
	Status struct {
		LoadBalancer struct {
			Ingress []ingress `json:"ingress"`
		} `json:"loadBalancer"`
	} `json:"status"`
}

type servicePort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol,omitempty"` // TCP (when empty), UDP or SCTP
	Port     int    `json:"port"`
	NodePort int    `json:"nodePort,omitempty"`
}

type ingress struct {
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// name is the Service's namespace/name.
func (s service) name() string { return s.Metadata.Namespace + "/" + s.Metadata.Name }

func (s service) isLoadBalancer() bool { return s.Spec.Type == "LoadBalancer" }

// atLocalhost reports a status that says what Docker Desktop's does:
// reached at localhost, and nothing else.
func (s service) atLocalhost() bool {
	in := s.Status.LoadBalancer.Ingress
	return len(in) == 1 && in[0] == ingress{Hostname: "localhost"}
}

// ingressPatch is the merge patch of a Service's status that makes it
// atLocalhost: a merge patch replaces a list whole, so whatever ingress
// was there goes.
const ingressPatch = `{"status":{"loadBalancer":{"ingress":[{"hostname":"localhost"}]}}}`

// portKey is a listener on the distro's loopback: one per protocol and
// port, on each loopback address.
type portKey struct {
	Proto string // tcp or udp
	Port  int
}

func (k portKey) String() string { return fmt.Sprintf("%s/%d", k.Proto, k.Port) }

// target is where a listener's connections go, and for whom.
type target struct {
	Dial  string // host:port
	Owner string // "the Kubernetes API server", "service default/web"
}

// wantOf is the listeners the LoadBalancer Services of svcs (by name) ask
// for: each TCP and UDP port at the Service's port, to its NodePort on
// node. A port reserved (the API server's) or asked for by two Services
// (the first by name keeps it) is left out and said in notes, as is a
// port that cannot be carried (SCTP, no NodePort allocated).
func wantOf(svcs map[string]service, node netip.Addr, reserved portKey) (want map[portKey]target, notes []string) {
	want = map[portKey]target{}
	names := make([]string, 0, len(svcs))
	for n := range svcs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		s := svcs[n]
		if !s.isLoadBalancer() {
			continue
		}
		owner := "service " + n
		for _, p := range s.Spec.Ports {
			proto := strings.ToLower(p.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			k := portKey{Proto: proto, Port: p.Port}
			switch {
			case proto != "tcp" && proto != "udp":
				notes = append(notes, fmt.Sprintf("%s: port %s is not published in the distro: only TCP and UDP are carried", owner, k))
				continue
			case p.NodePort <= 0 || p.NodePort > 65535 || p.Port <= 0 || p.Port > 65535:
				notes = append(notes, fmt.Sprintf("%s: port %s is not published in the distro: it has no node port (allocateLoadBalancerNodePorts: false?)", owner, k))
				continue
			case k == reserved:
				notes = append(notes, fmt.Sprintf("%s: port %s is not published in the distro: the Kubernetes API server is published there", owner, k))
				continue
			}
			if other, taken := want[k]; taken {
				notes = append(notes, fmt.Sprintf("%s: port %s is not published in the distro: %s has it", owner, k, other.Owner))
				continue
			}
			want[k] = target{Dial: netip.AddrPortFrom(node, uint16(p.NodePort)).String(), Owner: owner}
		}
	}
	return want, notes
}

// diff says which listeners close (open, and no longer wanted or wanted
// with another target) and which open (wanted, and not open with that
// target), each sorted.
func diff(open, want map[portKey]target) (closing, opening []portKey) {
	for k, t := range open {
		if w, ok := want[k]; !ok || w != t {
			closing = append(closing, k)
		}
	}
	for k, w := range want {
		if t, ok := open[k]; !ok || t != w {
			opening = append(opening, k)
		}
	}
	less := func(a, b portKey) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		return a.Port - b.Port
	}
	slices.SortFunc(closing, less)
	slices.SortFunc(opening, less)
	return closing, opening
}

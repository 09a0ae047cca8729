package kubeports

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var node = netip.MustParseAddr("100.64.249.2")

func services(t *testing.T, objects ...string) map[string]service {
	t.Helper()
	m := map[string]service{}
	for _, o := range objects {
		var s service
		if err := json.Unmarshal([]byte(o), &s); err != nil {
			t.Fatal(err)
		}
		m[s.name()] = s
	}
	return m
}

func keys(ks []portKey) string {
	var s []string
	for _, k := range ks {
		s = append(s, k.String())
	}
	return strings.Join(s, " ")
}

// From what the Services were to what they are: which listeners close
// and which open, and where each goes.
func TestServicesToListeners(t *testing.T) {
	api := portKey{"tcp", 6443}
	for _, c := range []struct {
		name                   string
		before, after          []string
		closing, opening, open string // keys, space-separated
		notes                  int
	}{
		{name: "a LoadBalancer appears",
			after:   []string{svc("default", "web", "1", false, "80:30080/tcp", "53:30053/udp")},
			opening: "tcp/80 udp/53", open: "tcp/80>100.64.249.2:30080 udp/53>100.64.249.2:30053"},
		{name: "a ClusterIP Service is not published",
			after: []string{svc("default", "db", "1", false)}},
		{name: "a LoadBalancer goes",
			before:  []string{svc("default", "web", "1", false, "80:30080/tcp")},
			closing: "tcp/80"},
		{name: "its ports change: one kept, one gone, one new",
			before:  []string{svc("default", "web", "1", false, "80:30080/tcp", "443:30443/tcp")},
			after:   []string{svc("default", "web", "2", false, "80:30080/tcp", "8443:30444/tcp")},
			closing: "tcp/443", opening: "tcp/8443", open: "tcp/80>100.64.249.2:30080 tcp/8443>100.64.249.2:30444"},
		{name: "its node port changes: closed and opened again",
			before:  []string{svc("default", "web", "1", false, "80:30080/tcp")},
			after:   []string{svc("default", "web", "2", false, "80:30081/tcp")},
			closing: "tcp/80", opening: "tcp/80", open: "tcp/80>100.64.249.2:30081"},
		{name: "its type changes to ClusterIP",
			before:  []string{svc("default", "web", "1", false, "80:30080/tcp")},
			after:   []string{svc("default", "web", "2", false)},
			closing: "tcp/80"},
		{name: "its status changes: nothing to do",
			before: []string{svc("default", "web", "1", false, "80:30080/tcp")},
			after:  []string{svc("default", "web", "2", true, "80:30080/tcp")},
			open:   "tcp/80>100.64.249.2:30080"},
		{name: "two Services on one port: the first by name keeps it",
			after:   []string{svc("b", "web", "1", false, "80:30081/tcp"), svc("a", "web", "1", false, "80:30080/tcp")},
			opening: "tcp/80", open: "tcp/80>100.64.249.2:30080", notes: 1},
		{name: "the API server's port is not a Service's",
			after:   []string{svc("default", "web", "1", false, "6443:30643/tcp", "6443:30643/udp")},
			opening: "udp/6443", open: "udp/6443>100.64.249.2:30643", notes: 1},
		{name: "sctp and a port with no node port are left out",
			after: []string{svc("default", "web", "1", false, "80:30080/sctp", "81:0/tcp")},
			notes: 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := wantOf(services(t, c.before...), node, api)
			after, notes := wantOf(services(t, c.after...), node, api)
			closing, opening := diff(before, after)
			if keys(closing) != c.closing || keys(opening) != c.opening {
				t.Errorf("closing %q opening %q; want %q and %q", keys(closing), keys(opening), c.closing, c.opening)
			}
			var open []string
			for _, k := range sortedKeys(after) {
				open = append(open, fmt.Sprintf("%s>%s", k, after[k].Dial))
			}
			if strings.Join(open, " ") != c.open {
				t.Errorf("open %q; want %q", strings.Join(open, " "), c.open)
			}
			if len(notes) != c.notes {
				t.Errorf("notes %q; want %d", notes, c.notes)
			}
		})
	}
}

func sortedKeys(m map[portKey]target) []portKey {
	_, ks := diff(nil, m)
	return ks
}

// The status patch makes a Service say localhost, and only that; a
// Service that says so already is not patched.
func TestIngressPatch(t *testing.T) {
	var patch map[string]any
	if err := json.Unmarshal([]byte(ingressPatch), &patch); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"hostname": "localhost"}}}}}
	if !reflect.DeepEqual(patch, want) {
		t.Fatalf("the patch: %s", ingressPatch)
	}
	for _, c := range []struct {
		ingress []ingress
		done    bool
	}{
		{nil, false},
		{[]ingress{{Hostname: "localhost"}}, true},
		{[]ingress{{IP: "127.0.0.1"}}, false},
		{[]ingress{{Hostname: "localhost", IP: "10.0.0.1"}}, false},
		{[]ingress{{Hostname: "localhost"}, {Hostname: "other"}}, false},
	} {
		var s service
		s.Status.LoadBalancer.Ingress = c.ingress
		if s.atLocalhost() != c.done {
			t.Errorf("%+v: at localhost %v", c.ingress, !c.done)
		}
		// What a merge patch makes of it: the list replaced whole.
		var after service
		b, _ := json.Marshal(s)
		var doc map[string]any
		json.Unmarshal(b, &doc)
		doc["status"] = patch["status"]
		b, _ = json.Marshal(doc)
		json.Unmarshal(b, &after)
		if !after.atLocalhost() {
			t.Errorf("%+v patched: %+v", c.ingress, after.Status.LoadBalancer.Ingress)
		}
	}
}

package hostports

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeDocker is dockerd's API as far as the watcher asks: the running
// containers, one container, and the events (what the test sends).
type fakeDocker struct {
	sock   string
	events chan string

	mu         sync.Mutex
	containers map[string]fakeContainer
}

type fakeContainer struct {
	Name, NetworkMode string
	Pid               int
}

func newFakeDocker(t *testing.T, cs map[string]fakeContainer) *fakeDocker {
	t.Helper()
	f := &fakeDocker{sock: filepath.Join(t.TempDir(), "docker.sock"), events: make(chan string), containers: cs}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeDocker) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", f.sock)
}

func (f *fakeDocker) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	cs := maps.Clone(f.containers)
	f.mu.Unlock()
	switch {
	case r.URL.Path == "/containers/json":
		var list []map[string]any
		for id, c := range cs {
			list = append(list, map[string]any{"Id": id, "Names": []string{"/" + c.Name}, "HostConfig": map[string]any{"NetworkMode": c.NetworkMode}})
		}
		json.NewEncoder(w).Encode(list)
	case strings.HasPrefix(r.URL.Path, "/containers/") && strings.HasSuffix(r.URL.Path, "/json"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/containers/"), "/json")
		c, ok := cs[id]
		if !ok {
			http.Error(w, "no such container", http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"Id": id, "Name": "/" + c.Name,
			"State": map[string]any{"Running": true, "Pid": c.Pid}, "HostConfig": map[string]any{"NetworkMode": c.NetworkMode}})
	case r.URL.Path == "/events":
		if !strings.Contains(r.URL.Query().Get("filters"), `"start","die"`) {
			http.Error(w, "unexpected filters", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-f.events:
				fmt.Fprintln(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// start runs a container, and says so.
func (f *fakeDocker) start(id string, c fakeContainer) {
	f.mu.Lock()
	f.containers[id] = c
	f.mu.Unlock()
	f.events <- `{"Type":"container","Action":"start","Actor":{"ID":"` + id + `"}}`
}

// die ends a container, and says so.
func (f *fakeDocker) die(id string) {
	f.mu.Lock()
	delete(f.containers, id)
	f.mu.Unlock()
	f.events <- `{"Type":"container","Action":"die","Actor":{"ID":"` + id + `"}}`
}

// The containers followed are the running ones with the host's network:
// listed when the events open, then kept by start and die.
func TestFollowHostNetworkContainers(t *testing.T) {
	fake := newFakeDocker(t, map[string]fakeContainer{
		"aaa": {Name: "web", NetworkMode: "host", Pid: 11},
		"bbb": {Name: "db", NetworkMode: "bridge", Pid: 12},
		"ccc": {Name: "side", NetworkMode: "container:aaa", Pid: 13},
	})
	log, _ := quietLog()
	w := &Watcher{Dial: fake.dial, Log: log}
	w.setUp()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.follow(ctx)
	}()
	defer func() { cancel(); <-done }()
	followed := func() map[string]container {
		w.mu.Lock()
		defer w.mu.Unlock()
		return maps.Clone(w.containers)
	}
	within(t, w.kick, "the containers listed")
	if got := followed(); !maps.Equal(got, map[string]container{"aaa": {Name: "web", Pid: 11}}) {
		t.Fatalf("listed %v", got)
	}
	fake.start("ddd", fakeContainer{Name: "bridged", NetworkMode: "bridge", Pid: 14})
	fake.start("eee", fakeContainer{Name: "api", NetworkMode: "host", Pid: 15})
	within(t, w.kick, "a host-network container started")
	if got := followed(); !maps.Equal(got, map[string]container{"aaa": {Name: "web", Pid: 11}, "eee": {Name: "api", Pid: 15}}) {
		t.Fatalf("after the starts: %v", got)
	}
	fake.die("aaa")
	within(t, w.kick, "a host-network container died")
	if got := followed(); !maps.Equal(got, map[string]container{"eee": {Name: "api", Pid: 15}}) {
		t.Fatalf("after a die: %v", got)
	}
}

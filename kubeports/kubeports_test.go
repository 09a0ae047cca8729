package kubeports

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ddinit/ddinit/kubeapi"
)

// until reads passes over the ports until one satisfies ok.
func until(t *testing.T, applied <-chan map[portKey]target, what string, ok func(map[portKey]target) bool) {
	t.Helper()
	for {
		if open := within(t, applied, what); ok(open) {
			return
		}
	}
}

// While Kubernetes is on, the API server answers on the distro's loopback
// (TLS through to it, as kubectl speaks it), a LoadBalancer Service's
// port opens when it appears and closes when it goes, and the kubeconfig
// is offered; switched off, all of it goes.
func TestPublisher(t *testing.T) {
	fake := newFakeAPI(t)
	// The fake's node, where NodePorts are, is its address: 127.0.0.1.
	nodeport := echo(t, "nodeport")
	apiPort, webPort := freePort(t), freePort(t)
	shared := t.TempDir()
	log, _ := quietLog()
	applied := make(chan map[portKey]target, 64)
	p := New(Options{Shared: shared, SharedKubeconfig: sharedKubeconfig, APIPort: apiPort, Log: log,
		loopbacks: []string{"127.0.0.1"}, group: func() (int, error) { return testGroup(), nil },
		applied: func(open map[portKey]target) { applied <- open }})
	defer p.Close()
	apiKey, webKey := portKey{"tcp", apiPort}, portKey{"tcp", webPort}

	fake.lists <- list("1")
	p.Set(State{On: true, APIServer: fake.addr(), Kubeconfig: fake.kubeconfig})
	until(t, applied, "the API server's port", func(open map[portKey]target) bool { _, ok := open[apiKey]; return ok })
	within(t, fake.requested, "the follower's list") // it follows once it can
	p.Set(State{On: true, Ready: true, APIServer: fake.addr(), Kubeconfig: fake.kubeconfig})
	offered := filepath.Join(shared, sharedKubeconfig)
	if b, err := os.ReadFile(offered); err != nil || string(b) != mustRead(t, fake.kubeconfig) {
		t.Fatalf("the kubeconfig offered: %v", err)
	}

	// kubectl's way: TLS to 127.0.0.1:<port> with the offered kubeconfig.
	kubectl := &apiClient{kubeapi.New(offered, loopback(apiPort))}
	defer kubectl.Close()
	fake.lists <- list("1")
	if _, _, err := kubectl.list(context.Background()); err != nil {
		t.Fatalf("the API server through the distro's loopback: %v", err)
	}

	w := make(chan string)
	fake.watches <- w
	ports := strconv.Itoa(webPort) + ":" + strconv.Itoa(nodeport.Addr().(*net.TCPAddr).Port) + "/tcp"
	w <- ev("ADDED", svc("default", "web", "2", false, ports))
	until(t, applied, "the Service's port", func(open map[portKey]target) bool { _, ok := open[webKey]; return ok })
	if got := ask(t, loopback(webPort)); got != "nodeport:hi" {
		t.Fatalf("the LoadBalancer port answered %q", got)
	}
	w <- ev("DELETED", svc("default", "web", "3", false, ports))
	until(t, applied, "the Service's port closed", func(open map[portKey]target) bool { _, ok := open[webKey]; return !ok })
	if got := ask(t, loopback(webPort)); got != "" {
		t.Fatalf("the deleted Service's port answered %q", got)
	}

	p.Set(State{On: false})
	if got := ask(t, loopback(apiPort)); got != "" {
		t.Errorf("off, the API server's port answered %q", got)
	}
	if _, err := os.Lstat(offered); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("off, the kubeconfig is still offered: %v", err)
	}

	// On again, then PID 1 goes: closed and withdrawn.
	p.Set(State{On: true, APIServer: fake.addr()})
	until(t, applied, "the API server's port again", func(open map[portKey]target) bool { _, ok := open[apiKey]; return ok })
	p.Close()
	if got := ask(t, loopback(apiPort)); got != "" {
		t.Errorf("closed, the API server's port answered %q", got)
	}
}

// A state whose API server address does not parse publishes nothing, and
// says why.
func TestPublisherBadAddress(t *testing.T) {
	log, hook := quietLog()
	p := New(Options{Log: log, loopbacks: []string{"127.0.0.1"}})
	p.Set(State{On: true, APIServer: "100.64.249.2"})
	defer p.Close()
	if p.run != nil || hook.LastEntry() == nil || hook.LastEntry().Data["error"] == nil {
		t.Fatalf("published for a bad address, or said nothing: %v", hook.LastEntry())
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

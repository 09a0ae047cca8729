package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// poller asks, over and over, on a fresh connection each time, and keeps
// what went wrong: a refused connection (or a missing socket file), a
// request unanswered for longer than it allows, an answer it does not
// accept.
type poller struct {
	what   string
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	asked  int
	codes  map[int]int
	bodies map[int]string // the last body seen for each status
	faults []string
	dials  int
}

func startPoller(what, sock, path string, within time.Duration, every time.Duration) *poller {
	return newPoller(what, sock, path, within, every, false)
}

// startKeepAlivePoller asks on one connection kept from request to
// request, as compose, the SDKs and IDEs do.
func startKeepAlivePoller(what, sock, path string, within time.Duration, every time.Duration) *poller {
	return newPoller(what, sock, path, within, every, true)
}

func newPoller(what, sock, path string, within time.Duration, every time.Duration, keepAlive bool) *poller {
	p := &poller{what: what, stop: make(chan struct{}), done: make(chan struct{}), codes: map[int]int{}, bodies: map[int]string{}}
	client := http.Client{Timeout: within, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			p.mu.Lock()
			p.dials++
			p.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: !keepAlive,
	}}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(every):
			}
			start := time.Now()
			resp, err := client.Get("http://local" + path)
			p.mu.Lock()
			p.asked++
			switch {
			case err != nil && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)):
				p.faults = append(p.faults, fmt.Sprintf("refused at %s: %v", start.Format("15:04:05.000"), err))
			case err != nil:
				p.faults = append(p.faults, fmt.Sprintf("no answer within %s at %s: %v", within, start.Format("15:04:05.000"), err))
			default:
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				p.codes[resp.StatusCode]++
				p.bodies[resp.StatusCode] = strings.TrimSpace(string(b))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// end stops polling and fails the test for every fault seen.
func (p *poller) end(t *testing.T) {
	t.Helper()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Logf("%s: %d requests on %d connections, answers by status %v", p.what, p.asked, p.dials, p.codes)
	for _, f := range p.faults {
		t.Errorf("%s: %s", p.what, f)
	}
}

// A live switch to a second pack and back, without a reboot: a client
// polling _ping through the exposed socket on a new connection each time,
// one keeping its connection, and one through a distro's proxy, are never
// refused nor answered an error (held while the engine is replaced), /ping on
// the control socket is never refused nor unanswered for a second and
// names the switch meanwhile, and the container with a restart policy,
// the volume's data and the image are there after each switch, as is a
// bind of the distro's files through its proxy.
func TestLiveVersionPackSwitch(t *testing.T) {
	harness.RequireEnvironment(t)
	second := harness.TestPack(t, "pack2")
	shared := newShared(t)
	in := harness.Start(t, harness.Options{Extra: []string{"--wsl-shared", shared}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	in.Docker("run", "-d", "--name", "keeper", "--restart", "always", "-v", "livevol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f; exec sleep 3600")
	distro := newUserDistro(t, "Ubuntu")
	distro.sh(`mkdir -p ~/project && echo mine > ~/project/f`)
	distro.startProxy(shared)

	engine := startPoller("_ping through the exposed socket", in.Sock, "/_ping", 3*time.Minute, 20*time.Millisecond)
	// A client that keeps its connection: the engine behind it is
	// replaced, and its next request goes to the new one.
	kept := startKeepAlivePoller("_ping on a kept connection to the exposed socket", in.Sock, "/_ping", 3*time.Minute, 50*time.Millisecond)
	proxied := startPoller("_ping through the distro's proxy", fmt.Sprintf("/proc/%d/root/run/docker.sock", distro.pid), "/_ping", 3*time.Minute, 50*time.Millisecond)
	health := startPoller("/ping on the control socket", in.ControlSock(), "/ping", time.Second, 50*time.Millisecond)
	for _, to := range []struct {
		pack  string
		label bool
	}{{second, true}, {harness.PackISO, false}} {
		began := time.Now()
		out, err := in.CLI("pack", "use", "--live", to.pack)
		if err != nil || !strings.Contains(out, "switched in") {
			t.Fatalf("ddinit pack use --live %s: %v\n%s", to.pack, err, out)
		}
		t.Logf("switched to %s in %s:\n%s", to.pack, time.Since(began).Round(time.Millisecond), out)
		if got := strings.Contains(in.Labels(), "pack=2"); got != to.label {
			t.Fatalf("docker info labels %s after the switch to %s", in.Labels(), to.pack)
		}
		harness.WaitUntil(t, 30*time.Second, "the restart-policy container to be back", func() bool {
			out, _ := in.DockerErr("inspect", "-f", "{{.State.Running}}", "keeper")
			return strings.TrimSpace(out) == "true"
		})
		if out := in.Docker("run", "--rm", "-v", "livevol:/d", "busybox:local", "cat", "/d/f"); out != "kept\n" {
			t.Fatalf("the volume's data after the switch: %q", out)
		}
		if st := in.Status(); st.Packs == nil || st.Packs.Running == nil || !strings.HasSuffix(st.Packs.Running.Path, to.pack[strings.LastIndex(to.pack, "/"):]) || st.Packs.Trial {
			t.Fatalf("/status packs after the switch to %s: %+v", to.pack, st.Packs)
		}
		if out := distro.sh(`docker run --rm -v ~/project:/p busybox:local cat /p/f`); out != "mine\n" {
			t.Fatalf("a bind of the distro's project through its proxy after the switch to %s: %q", to.pack, out)
		}
	}
	engine.end(t)
	kept.end(t)
	proxied.end(t)
	health.end(t)
	for _, p := range []*poller{engine, kept, proxied} {
		if p.codes[http.StatusOK] == 0 || len(p.codes) != 1 {
			t.Errorf("%s answered %v (bodies %v); want only 200: held, never refused", p.what, p.codes, p.bodies)
		}
	}
	if !strings.Contains(health.bodies[http.StatusServiceUnavailable], "switching version pack to") {
		t.Errorf("/ping during the switch said %q; want it to name the switch", health.bodies[http.StatusServiceUnavailable])
	}
}

// A live switch to a pack whose dockerd cannot start rolls back by itself,
// the same way: the clients held meanwhile are answered by the engine of
// the previous pack, and /status says why.
func TestLiveSwitchToBrokenPackRollsBack(t *testing.T) {
	harness.RequireEnvironment(t)
	broken := harness.TestPack(t, "broken")
	in := harness.Start(t, harness.Options{Config: map[string]any{"settingsDeadline": "5s"}})
	in.WaitPing(60 * time.Second)
	in.Docker("volume", "create", "survivor")
	engine := startPoller("_ping through the exposed socket", in.Sock, "/_ping", 3*time.Minute, 50*time.Millisecond)
	out, err := in.CLI("pack", "use", "--live", broken)
	if err == nil || !strings.Contains(out, "rolled back") || !strings.Contains(out, "this pack is broken") {
		t.Fatalf("ddinit pack use --live on the broken pack: %v\n%s", err, out)
	}
	engine.end(t)
	if len(engine.codes) != 1 || engine.codes[http.StatusOK] == 0 {
		t.Errorf("_ping through the exposed socket answered %v (bodies %v); want only 200, from the old engine", engine.codes, engine.bodies)
	}
	if out := in.Docker("volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "survivor") {
		t.Fatalf("volumes after the rollback: %q", out)
	}
	if st := in.Status(); st.Packs == nil || st.Packs.Running == nil || !strings.HasSuffix(st.Packs.Running.Path, harness.PackISO[strings.LastIndex(harness.PackISO, "/"):]) {
		t.Fatalf("/status packs after the rollback: %+v", st.Packs)
	}
}

// One live switch at a time: a second asked while the first is under way
// is a 409 and changes nothing; a shutdown asked during the switch ends
// ddinit (cleanly, no engine started on the new pack), as the frontend
// quitting expects.
func TestLiveSwitchRefusesASecondAndStopsOnShutdown(t *testing.T) {
	harness.RequireEnvironment(t)
	second := harness.TestPack(t, "pack2")
	in := harness.Start(t, harness.Options{})
	in.WaitPing(60 * time.Second)
	in.PutPack(control.UsePack{Path: second, Live: true})
	if code, body := in.PutPackResp(control.UsePack{Path: harness.PackISO, Live: true}); code != http.StatusConflict || !strings.Contains(body, "under way") {
		t.Fatalf("a second live switch during the first: %d %s", code, body)
	}
	if code, body := in.Get(http.MethodPost, "/shutdown"); code != http.StatusAccepted {
		t.Fatalf("POST /shutdown during the switch: %d %s", code, body)
	}
	if code := in.Exited(90 * time.Second); code != 0 {
		t.Fatalf("ddinit exited %d after a shutdown during a live switch", code)
	}
	if n := strings.Count(in.Output(), "PID 1 started in new namespaces"); n != 1 {
		t.Fatalf("%d PID 1s started; want the first only (the shutdown came during the switch)", n)
	}
}

// A live switch from an engine stopped or paused while idle: the old
// PID 1 stops (thawing first), the new engine comes up on the new pack.
func TestLiveSwitchFromAnIdleEngine(t *testing.T) {
	harness.RequireEnvironment(t)
	second := harness.TestPack(t, "pack2")
	for _, c := range []struct{ name, flag string }{{"stopped", "--idle-stop"}, {"paused", "--idle-pause"}} {
		t.Run(c.name, func(t *testing.T) {
			in := harness.Start(t, harness.Options{Extra: []string{c.flag, "1s"}})
			in.WaitPing(60 * time.Second)
			harness.WaitUntil(t, 30*time.Second, "the engine to be "+c.name+" (idle)", func() bool {
				code, body := in.Get(http.MethodGet, "/ping")
				return code == 200 && strings.Contains(body, c.name+" (idle)")
			})
			if out, err := in.CLI("pack", "use", "--live", second); err != nil || !strings.Contains(out, "switched in") {
				t.Fatalf("ddinit pack use --live from an engine %s: %v\n%s", c.name, err, out)
			}
			if !strings.Contains(in.Labels(), "pack=2") {
				t.Fatalf("docker info labels %s after the switch", in.Labels())
			}
			if code, _ := in.Stop(); code != 0 {
				t.Fatalf("ddinit exited %d", code)
			}
		})
	}
}

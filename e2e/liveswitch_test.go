package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
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
	requireEnvironment(t)
	second := testPack(t, "pack2")
	shared := newShared(t)
	in := start(t, options{extra: []string{"--wsl-shared", shared}})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	in.docker("run", "-d", "--name", "keeper", "--restart", "always", "-v", "livevol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f; exec sleep 3600")
	distro := newUserDistro(t, "Ubuntu")
	distro.sh(`mkdir -p ~/project && echo mine > ~/project/f`)
	distro.startProxy(shared)

	engine := startPoller("_ping through the exposed socket", in.sock, "/_ping", 3*time.Minute, 20*time.Millisecond)
	// A client that keeps its connection: the engine behind it is
	// replaced, and its next request goes to the new one.
	kept := startKeepAlivePoller("_ping on a kept connection to the exposed socket", in.sock, "/_ping", 3*time.Minute, 50*time.Millisecond)
	proxied := startPoller("_ping through the distro's proxy", fmt.Sprintf("/proc/%d/root/run/docker.sock", distro.pid), "/_ping", 3*time.Minute, 50*time.Millisecond)
	health := startPoller("/ping on the control socket", in.controlSock(), "/ping", time.Second, 50*time.Millisecond)
	for _, to := range []struct {
		pack  string
		label bool
	}{{second, true}, {packISO, false}} {
		began := time.Now()
		out, err := in.cli("pack", "use", "--live", to.pack)
		if err != nil || !strings.Contains(out, "switched in") {
			t.Fatalf("ddinit pack use --live %s: %v\n%s", to.pack, err, out)
		}
		t.Logf("switched to %s in %s:\n%s", to.pack, time.Since(began).Round(time.Millisecond), out)
		if got := strings.Contains(in.packLabel(), "pack=2"); got != to.label {
			t.Fatalf("docker info labels %s after the switch to %s", in.packLabel(), to.pack)
		}
		waitUntil(t, 30*time.Second, "the restart-policy container to be back", func() bool {
			out, _ := in.dockerErr("inspect", "-f", "{{.State.Running}}", "keeper")
			return strings.TrimSpace(out) == "true"
		})
		if out := in.docker("run", "--rm", "-v", "livevol:/d", "busybox:local", "cat", "/d/f"); out != "kept\n" {
			t.Fatalf("the volume's data after the switch: %q", out)
		}
		if st := in.status(); st.Packs == nil || st.Packs.Running == nil || !strings.HasSuffix(st.Packs.Running.Path, to.pack[strings.LastIndex(to.pack, "/"):]) || st.Packs.Trial {
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
	requireEnvironment(t)
	broken := testPack(t, "broken")
	in := start(t, options{config: map[string]any{"settingsDeadline": "5s"}})
	in.waitPing(60 * time.Second)
	in.docker("volume", "create", "survivor")
	engine := startPoller("_ping through the exposed socket", in.sock, "/_ping", 3*time.Minute, 50*time.Millisecond)
	out, err := in.cli("pack", "use", "--live", broken)
	if err == nil || !strings.Contains(out, "rolled back") || !strings.Contains(out, "this pack is broken") {
		t.Fatalf("ddinit pack use --live on the broken pack: %v\n%s", err, out)
	}
	engine.end(t)
	if len(engine.codes) != 1 || engine.codes[http.StatusOK] == 0 {
		t.Errorf("_ping through the exposed socket answered %v (bodies %v); want only 200, from the old engine", engine.codes, engine.bodies)
	}
	if out := in.docker("volume", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "survivor") {
		t.Fatalf("volumes after the rollback: %q", out)
	}
	if st := in.status(); st.Packs == nil || st.Packs.Running == nil || !strings.HasSuffix(st.Packs.Running.Path, packISO[strings.LastIndex(packISO, "/"):]) {
		t.Fatalf("/status packs after the rollback: %+v", st.Packs)
	}
}

// One live switch at a time: a second asked while the first is under way
// is a 409 and changes nothing; a shutdown asked during the switch ends
// ddinit (cleanly, no engine started on the new pack), as the frontend
// quitting expects.
func TestLiveSwitchRefusesASecondAndStopsOnShutdown(t *testing.T) {
	requireEnvironment(t)
	second := testPack(t, "pack2")
	in := start(t, options{})
	in.waitPing(60 * time.Second)
	in.putPack(control.UsePack{Path: second, Live: true})
	if code, body := in.putPackResp(control.UsePack{Path: packISO, Live: true}); code != http.StatusConflict || !strings.Contains(body, "under way") {
		t.Fatalf("a second live switch during the first: %d %s", code, body)
	}
	if code, body := in.get(http.MethodPost, "/shutdown"); code != http.StatusAccepted {
		t.Fatalf("POST /shutdown during the switch: %d %s", code, body)
	}
	if code := in.exited(90 * time.Second); code != 0 {
		t.Fatalf("ddinit exited %d after a shutdown during a live switch", code)
	}
	if n := strings.Count(in.stderr.String(), "PID 1 started in new namespaces"); n != 1 {
		t.Fatalf("%d PID 1s started; want the first only (the shutdown came during the switch)", n)
	}
}

// A live switch from an engine stopped or paused while idle: the old
// PID 1 stops (thawing first), the new engine comes up on the new pack.
func TestLiveSwitchFromAnIdleEngine(t *testing.T) {
	requireEnvironment(t)
	second := testPack(t, "pack2")
	for _, c := range []struct{ name, flag string }{{"stopped", "--idle-stop"}, {"paused", "--idle-pause"}} {
		t.Run(c.name, func(t *testing.T) {
			in := start(t, options{extra: []string{c.flag, "1s"}})
			in.waitPing(60 * time.Second)
			waitUntil(t, 30*time.Second, "the engine to be "+c.name+" (idle)", func() bool {
				code, body := in.get(http.MethodGet, "/ping")
				return code == 200 && strings.Contains(body, c.name+" (idle)")
			})
			if out, err := in.cli("pack", "use", "--live", second); err != nil || !strings.Contains(out, "switched in") {
				t.Fatalf("ddinit pack use --live from an engine %s: %v\n%s", c.name, err, out)
			}
			if !strings.Contains(in.packLabel(), "pack=2") {
				t.Fatalf("docker info labels %s after the switch", in.packLabel())
			}
			if code, _ := in.stop(); code != 0 {
				t.Fatalf("ddinit exited %d", code)
			}
		})
	}
}

// TestBenchLiveSwitch is `make bench` for a live version-pack switch: from
// the switch's start (PUT /version-pack answered: the pack verified, the
// old engine about to stop) to the new engine answering through the
// exposed socket (a client held meanwhile), against a warm boot of the
// same data store, alternated in one run.
func TestBenchLiveSwitch(t *testing.T) {
	if os.Getenv("DDINIT_BENCH") == "" {
		t.Skip("set DDINIT_BENCH=1 (make bench) to run the benchmarks")
	}
	requireEnvironment(t)
	second := testPack(t, "pack2")
	data, _ := newDirs(t)
	first := start(t, options{dataDir: data, extra: asDeployed})
	first.waitPing(60 * time.Second)
	first.stop()
	var warm, switched []time.Duration
	for i := range 5 {
		in := start(t, options{dataDir: data, extra: asDeployed})
		warm = append(warm, in.waitPing(60*time.Second))
		to, label := second, true
		if i%2 == 1 {
			to, label = packISO, false
		}
		begun := in.putPack(control.UsePack{Path: to, Live: true})
		// Held from the switch's start until the new engine answers.
		waitUntil(t, 2*time.Minute, "the new engine to answer", func() bool {
			out, err := in.dockerErr("info", "--format", "{{json .Labels}}")
			return err == nil && strings.Contains(out, "pack=2") == label
		})
		switched = append(switched, time.Since(begun))
		in.stop()
	}
	w, s := median(warm), median(switched)
	t.Logf("BENCH live version-pack switch (switch begun to the new engine answering through the exposed socket), 5 rounds: %v, warm boot %v, ratio %.2f (target <= 1.5; spread of the ratios %s)",
		s.Round(time.Millisecond), w.Round(time.Millisecond), float64(s)/float64(w), ratioSpread(switched, warm))
}

// putPack sends PUT /version-pack, which must succeed, and returns when
// it was answered.
func (in *instance) putPack(req control.UsePack) time.Time {
	in.t.Helper()
	if code, body := in.putPackResp(req); code != http.StatusOK {
		in.t.Fatalf("PUT /version-pack: %d %s", code, body)
	}
	return time.Now()
}

// putPackResp sends PUT /version-pack and returns its status and body.
func (in *instance) putPackResp(req control.UsePack) (int, string) {
	in.t.Helper()
	c, err := control.NewClient("unix://"+in.controlSock(), 5*time.Minute)
	if err != nil {
		in.t.Fatal(err)
	}
	b, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPut, "http://ddinit/version-pack", bytes.NewReader(b))
	resp, err := c.HTTP().Do(r)
	if err != nil {
		in.t.Fatalf("PUT /version-pack: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

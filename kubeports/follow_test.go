package kubeports

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ddinit/ddinit/kubeapi"
)

// runFollower follows fake's Services with the real client until the
// test ends; each set of listeners it publishes comes on the channel, as
// "tcp/80>100.64.249.2:30080 …".
func runFollower(t *testing.T, fake *fakeAPI) <-chan string {
	t.Helper()
	published := make(chan string, 64)
	log, _ := quietLog()
	ready := &atomic.Bool{}
	ready.Store(true)
	client := &apiClient{kubeapi.New(fake.kubeconfig, fake.addr())}
	f := &follower{api: client, node: node, reserved: portKey{"tcp", 6443}, log: log, ready: ready, backoff: backoff,
		publish: func(want map[portKey]target) {
			var s []string
			for _, k := range sortedKeys(want) {
				s = append(s, k.String()+">"+want[k].Dial)
			}
			published <- strings.Join(s, " ")
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer client.Close()
		f.run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return published
}

// The follower lists, then watches from the list's resourceVersion,
// taking in each change as the watch framing brings it; a stream broken
// mid-event, an ERROR 410 in the stream and a 410 answer to the watch
// each make it list again; a watch the server ends is opened again from
// the last resourceVersion seen. Each LoadBalancer Service not yet at
// localhost gets one status patch.
func TestFollowerListsAndWatches(t *testing.T) {
	fake := newFakeAPI(t)
	web := svc("default", "web", "5", false, "80:30080/tcp")
	fake.lists <- list("10", web, svc("default", "db", "3", false))
	published := runFollower(t, fake)
	if got := within(t, published, "the first list"); got != "tcp/80>100.64.249.2:30080" {
		t.Fatalf("after the list: %q", got)
	}

	w1 := make(chan string)
	fake.watches <- w1
	w1 <- ev("ADDED", svc("default", "dns", "11", false, "53:30053/udp"))
	if got := within(t, published, "an ADDED"); got != "tcp/80>100.64.249.2:30080 udp/53>100.64.249.2:30053" {
		t.Fatalf("after ADDED: %q", got)
	}
	w1 <- ev("MODIFIED", svc("default", "web", "12", true, "80:30080/tcp", "443:30443/tcp"))
	if got := within(t, published, "a MODIFIED"); got != "tcp/80>100.64.249.2:30080 tcp/443>100.64.249.2:30443 udp/53>100.64.249.2:30053" {
		t.Fatalf("after MODIFIED: %q", got)
	}
	w1 <- `{"type":"BOOKMARK","object":{"kind":"Service","metadata":{"resourceVersion":"13"}}}`
	// The server ends the watch: watched again from the bookmark's
	// resourceVersion, no list.
	close(w1)
	w2 := make(chan string)
	fake.watches <- w2
	w2 <- ev("DELETED", svc("default", "dns", "14", false, "53:30053/udp"))
	if got := within(t, published, "a DELETED"); got != "tcp/80>100.64.249.2:30080 tcp/443>100.64.249.2:30443" {
		t.Fatalf("after DELETED: %q", got)
	}
	// Broken mid-event: listed again.
	fake.lists <- list("20", svc("default", "web", "12", true, "80:30080/tcp"))
	w2 <- abort
	if got := within(t, published, "the list after a broken stream"); got != "tcp/80>100.64.249.2:30080" {
		t.Fatalf("after the list again: %q", got)
	}
	// "resourceVersion too old" as an event: listed again.
	w3 := make(chan string)
	fake.watches <- w3
	fake.lists <- list("30", svc("default", "web", "12", true, "80:30080/tcp"), svc("other", "api", "25", false, "8080:30808/tcp"))
	fake.watchStatus <- 410 // for the watch after that list
	w3 <- `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 20 (29)","reason":"Expired","code":410}}`
	if got := within(t, published, "the list after an ERROR 410"); got != "tcp/80>100.64.249.2:30080 tcp/8080>100.64.249.2:30808" {
		t.Fatalf("after the 410 event: %q", got)
	}
	// ... and as the watch's answer.
	fake.lists <- list("40")
	if got := within(t, published, "the list after a 410 answer"); got != "" {
		t.Fatalf("after the 410 answer: %q", got)
	}
	w4 := make(chan string)
	fake.watches <- w4
	w4 <- ev("ADDED", svc("default", "late", "41", false, "81:30081/tcp"))
	within(t, published, "an event after it all")

	want := []string{
		"list",
		"patch default/web status application/merge-patch+json " + ingressPatch,
		"watch 10",
		"patch default/dns status application/merge-patch+json " + ingressPatch,
		"watch 13",
		"list",
		"watch 20",
		"list",
		"patch other/api status application/merge-patch+json " + ingressPatch,
		"watch 30",
		"list",
		"watch 40",
		"patch default/late status application/merge-patch+json " + ingressPatch,
	}
	// The last patch is sent after the event is published: wait for it.
	for {
		if r := within(t, fake.requested, "the last patch"); strings.HasPrefix(r, "patch default/late") {
			break
		}
	}
	if got := fake.seen(); !slices.Equal(got, want) {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.client != "kubernetes-admin" {
		t.Errorf("the client spoke as %q, not the kubeconfig's admin", fake.client)
	}
}

// A kubeconfig is read at its current context; one that lacks what a
// client needs is refused, naming what.
func TestParseKubeconfig(t *testing.T) {
	fake := newFakeAPI(t)
	b, err := os.ReadFile(fake.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubeapi.ParseKubeconfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if kc.Server != "https://127.0.0.1:6443" || len(kc.CA) == 0 || len(kc.Cert) == 0 || len(kc.Key) == 0 {
		t.Fatalf("read: server %q, %d bytes of CA, %d of certificate, %d of key", kc.Server, len(kc.CA), len(kc.Cert), len(kc.Key))
	}
	for _, c := range []struct{ doc, want string }{
		{`apiVersion: v1`, "JSON"},
		{`{"current-context":"x","contexts":[]}`, `"x" names no cluster`},
		{`{"current-context":"x","contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],"clusters":[{"name":"c","cluster":{"server":"https://h"}}]}`, "no certificate-authority-data"},
		{`{"current-context":"x","contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],"clusters":[{"name":"c","cluster":{"server":"https://h","certificate-authority-data":"Y2E="}}]}`, "no client-certificate-data"},
	} {
		if _, err := kubeapi.ParseKubeconfig([]byte(c.doc)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.doc, err, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: 0, 2: 250 * time.Millisecond, 3: 500 * time.Millisecond, 4: time.Second, 7: 8 * time.Second, 8: 10 * time.Second, 1000: 10 * time.Second} {
		if got := backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

// scriptedAPI answers the follower from a script, in the bubble's time:
// each list fails until lists succeed; each watch ends at once.
type scriptedAPI struct {
	mu      sync.Mutex
	calls   []time.Duration // when each list came, from start
	start   time.Time
	failFor int // lists that fail
	listed  int
}

func (s *scriptedAPI) list(ctx context.Context) (string, []service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, time.Since(s.start))
	s.listed++
	if s.listed <= s.failFor {
		return "", nil, errors.New("connection refused")
	}
	return "1", nil, nil
}

func (s *scriptedAPI) watch(ctx context.Context, rv string, each func(event)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *scriptedAPI) patchIngress(context.Context, string, string) error { return nil }

func (s *scriptedAPI) listTimes() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// While the API server cannot be reached, the follower lists again with
// backoff (at once, then 250 ms doubling); the API server becoming ready
// cuts the wait short.
func TestFollowerBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &scriptedAPI{start: time.Now(), failFor: 6}
		nudge := make(chan struct{}, 1)
		log, _ := quietLog()
		f := &follower{api: api, node: node, log: log, ready: &atomic.Bool{}, nudge: nudge, backoff: backoff, publish: func(map[portKey]target) {}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { f.run(ctx); close(done) }()

		time.Sleep(2 * time.Second)
		synctest.Wait()
		ms := time.Millisecond
		if got, want := api.listTimes(), []time.Duration{0, 0, 250 * ms, 750 * ms, 1750 * ms}; !slices.Equal(got, want) {
			t.Fatalf("lists at %v, want %v", got, want)
		}
		// Next due at 3750 ms; the nudge brings it now.
		nudge <- struct{}{}
		synctest.Wait()
		if got := api.listTimes(); len(got) != 6 || got[5] != 2*time.Second {
			t.Fatalf("lists at %v, want a sixth at 2s", got)
		}
		// The seventh succeeds; the watch it opens stays.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := api.listTimes(); len(got) != 7 {
			t.Fatalf("lists at %v, want seven, the last one holding", got)
		}
		cancel()
		<-done
	})
}

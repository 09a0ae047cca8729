package engineclient

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeEngine answers /containers/json and streams /events: the first
// stream breaks after one event, the next ones stay open.
func fakeEngine(t *testing.T) (func(context.Context) (net.Conn, error), *atomic.Int32) {
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	streams := &atomic.Int32{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(InternalHeader) == "" {
			http.Error(w, "not marked", http.StatusBadRequest)
			return
		}
		io.WriteString(w, `[{"Id":"0123456789abcdef"}]`)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		n := streams.Add(1)
		fmt.Fprintf(w, `{"Action":"start","Actor":{"ID":"c%d"}}`+"\n", n)
		w.(http.Flusher).Flush()
		if n == 1 {
			return // the engine restarts: the stream breaks
		}
		<-r.Context().Done()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, streams
}

func TestGetIsMarkedAsDdinits(t *testing.T) {
	dial, _ := fakeEngine(t)
	var list []struct{ ID string }
	if err := New(dial).Get(context.Background(), "/containers/json", &list); err != nil || len(list) != 1 || ShortID(list[0].ID) != "0123456789ab" {
		t.Fatalf("%v %v", list, err)
	}
}

// Follow opens the stream again when it breaks, and catches up (opened)
// each time before the events.
func TestFollowOpensAgainAndCatchesUp(t *testing.T) {
	dial, streams := fakeEngine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 8)
	quiet := logrus.New()
	quiet.Out = io.Discard
	done := make(chan struct{})
	go func() {
		defer close(done)
		New(dial).Follow(ctx, `{}`, func() error { got <- "opened"; return nil }, func(ev Event) { got <- ev.Actor.ID }, quiet)
	}()
	want := []string{"opened", "c1", "opened", "c2"}
	for i, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("step %d: %q, want %q", i, g, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("step %d (%q) did not come; %d streams opened", i, w, streams.Load())
		}
	}
	cancel()
	<-done
}

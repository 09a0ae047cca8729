package control

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/ddinit/ddinit/settings"
	"github.com/sirupsen/logrus"
)

func TestStatusCodeByKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{nil, 200},
		{fmt.Errorf("%w: no service named x", errdefs.ErrNotFound), 404},
		{&settings.Invalid{Field: "colour", Reason: "not a setting"}, 400},
		{fmt.Errorf("put: %w", settings.ErrStale), 409},
		{fmt.Errorf("%w: x is disabled", errdefs.ErrFailedPrecondition), 412},
		{fmt.Errorf("%w: still booting", errdefs.ErrUnavailable), 503},
		{settings.RolledBack("the change was rolled back: dockerd refused it"), 422},
		{fmt.Errorf("wrapped: %w", settings.RolledBack("x")), 422},
		{errors.New("no kind at all"), 500},
	} {
		if got := StatusCode(c.err); got != c.code {
			t.Errorf("%v: %d, want %d", c.err, got, c.code)
		}
		if c.err == nil {
			continue
		}
		// And back: a client sees the same kind.
		resp := &http.Response{StatusCode: c.code, Status: fmt.Sprintf("%d %s", c.code, http.StatusText(c.code)), Body: io.NopCloser(strings.NewReader(`{"message": "m"}`))}
		back := responseError(resp)
		if StatusCode(back) != c.code || !strings.HasSuffix(back.Error(), ": m") {
			t.Errorf("%v: the client's error %v is a %d", c.err, back, StatusCode(back))
		}
	}
}

// stubBackend answers as a booting or booted PID 1 would.
type stubBackend struct {
	health Health
	put    error
}

func (b stubBackend) Status() Status { return Status{} }
func (b stubBackend) Health() Health { return b.health }
func (b stubBackend) Logs(string, int, bool) ([]LogLine, <-chan LogLine, func(), error) {
	return nil, nil, nil, fmt.Errorf("%w: no service named x", errdefs.ErrNotFound)
}
func (b stubBackend) Restart(string) error { return fmt.Errorf("%w: booting", errdefs.ErrUnavailable) }
func (b stubBackend) Shutdown()            {}
func (b stubBackend) Diagnostics(io.Writer) error {
	return nil
}
func (b stubBackend) Settings() Settings                 { return Settings{Generation: 3} }
func (b stubBackend) UsePack(UsePack) (PackState, error) { return PackState{}, b.put }
func (b stubBackend) ResetKubernetes() error             { return b.put }
func (b stubBackend) Kubeconfig() ([]byte, error)        { return nil, b.put }

func (b stubBackend) PutSettings([]byte) (Settings, error) {
	return Settings{Generation: 3}, b.put
}

func serve(t *testing.T, b Backend, method, path, body string) *http.Response {
	t.Helper()
	s := &Server{Backend: b, Log: logrus.New()}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(method, path, bytes.NewReader([]byte(body))))
	return rec.Result()
}

func TestAnswersCarryTheKind(t *testing.T) {
	resp := serve(t, stubBackend{put: fmt.Errorf("%w: the engine is still booting", errdefs.ErrUnavailable)}, "PUT", "/settings", `{}`)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PUT while booting: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp = serve(t, stubBackend{put: &settings.Invalid{Field: "colour", Reason: "no"}}, "PUT", "/settings", `{}`)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 400 || !strings.Contains(string(b), `"field": "colour"`) || !strings.Contains(string(b), `"generation": 3`) {
		t.Fatalf("an invalid document: %d %s", resp.StatusCode, b)
	}
	if resp := serve(t, stubBackend{put: settings.RolledBack("rolled back: x")}, "PUT", "/settings", `{}`); resp.StatusCode != 422 {
		t.Fatalf("a rolled-back change: %d", resp.StatusCode)
	}
	if resp := serve(t, stubBackend{}, "POST", "/services/dockerd/restart", ""); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("restart while booting: %d", resp.StatusCode)
	}
	if resp := serve(t, stubBackend{}, "GET", "/logs?service=x", ""); resp.StatusCode != 404 {
		t.Fatalf("logs of no such service: %d", resp.StatusCode)
	}
	if resp := serve(t, stubBackend{}, "GET", "/logs?tail=many", ""); resp.StatusCode != 400 {
		t.Fatalf("logs with a bad tail: %d", resp.StatusCode)
	}
}

// /ping: 200 while ready even with notes, which follow on lines of their
// own; 503 with the reason and Retry-After when not.
func TestPingNotes(t *testing.T) {
	resp := serve(t, stubBackend{health: Health{State: "running", Ready: true, Notes: []string{"settings.json could not be used; kept aside"}}}, "GET", "/ping", "")
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "OK\n") || !strings.Contains(string(b), "note: settings.json could not be used") {
		t.Fatalf("ready with a note: %d %q", resp.StatusCode, b)
	}
	resp = serve(t, stubBackend{health: Health{State: "booting", Reason: "mounting"}}, "GET", "/ping", "")
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(b) != "booting: mounting\n" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("booting: %d %q", resp.StatusCode, b)
	}
}

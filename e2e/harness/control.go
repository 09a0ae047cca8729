package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/timeline"
)

// ControlSock is the instance's control API socket (in RunDir).
func (in *Instance) ControlSock() string { return filepath.Join(in.RunDir, "control.sock") }

// Get sends one request to the control API and returns status and body
// (status 0 and the error when it does not answer).
func (in *Instance) Get(method, path string) (int, string) {
	in.t.Helper()
	c, err := control.NewClient("unix://"+in.ControlSock(), 30*time.Second)
	if err != nil {
		in.t.Fatal(err)
	}
	resp, err := c.Do(context.Background(), method, path, false)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Status is GET /status, which must answer 200.
func (in *Instance) Status() control.Status {
	in.t.Helper()
	code, body := in.Get(http.MethodGet, "/status")
	if code != 200 {
		in.t.Fatalf("/status: %d %s", code, body)
	}
	var st control.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		in.t.Fatal(err)
	}
	return st
}

// CLI runs a ddinit subcommand (the instance's binary) against this
// instance's control socket.
func (in *Instance) CLI(args ...string) (string, error) {
	cmd := exec.Command(in.binary, args...)
	cmd.Env = append(os.Environ(), "DDINIT_CONTROL=unix://"+in.ControlSock())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// PutSettings sends PUT /settings and returns the status and body; a 503
// (booting: its Retry-After) is tried again, as the frontend does.
func (in *Instance) PutSettings(doc string) (int, string) {
	in.t.Helper()
	c, err := control.NewClient("unix://"+in.ControlSock(), 2*time.Minute)
	if err != nil {
		in.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodPut, "http://ddinit/settings", bytes.NewReader([]byte(doc)))
		resp, err := c.HTTP().Do(req)
		if err != nil {
			in.t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return resp.StatusCode, b.String()
		}
	}
}

// PutSettingsResp sends PUT /settings once and returns the answer, or nil
// while the control socket does not answer yet.
func (in *Instance) PutSettingsResp(doc string) *http.Response {
	c, err := control.NewClient("unix://"+in.ControlSock(), 2*time.Minute)
	if err != nil {
		in.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://ddinit/settings", bytes.NewReader([]byte(doc)))
	resp, err := c.HTTP().Do(req)
	if err != nil {
		return nil
	}
	resp.Body.Close()
	return resp
}

// PutPack sends PUT /version-pack, which must succeed, and returns when
// it was answered.
func (in *Instance) PutPack(req control.UsePack) time.Time {
	in.t.Helper()
	if code, body := in.PutPackResp(req); code != http.StatusOK {
		in.t.Fatalf("PUT /version-pack: %d %s", code, body)
	}
	return time.Now()
}

// PutPackResp sends PUT /version-pack and returns its status and body.
func (in *Instance) PutPackResp(req control.UsePack) (int, string) {
	in.t.Helper()
	c, err := control.NewClient("unix://"+in.ControlSock(), 5*time.Minute)
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

// WaitPing503 waits until /ping is 503 with a reason holding every one
// of words, and returns the body and how long it took.
func (in *Instance) WaitPing503(timeout time.Duration, words ...string) (string, time.Duration) {
	in.t.Helper()
	start := time.Now()
	var body string
	for time.Since(start) < timeout {
		var code int
		code, body = in.Get(http.MethodGet, "/ping")
		if code == http.StatusServiceUnavailable {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(body, w)
			}
			if ok {
				return body, time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	in.t.Fatalf("/ping did not turn 503 naming %v within %s (last: %q)", words, timeout, body)
	return "", 0
}

// WaitHealthy waits until /ping is 200.
func (in *Instance) WaitHealthy(timeout time.Duration) {
	in.t.Helper()
	var body string
	for start := time.Now(); time.Since(start) < timeout; time.Sleep(50 * time.Millisecond) {
		var code int
		if code, body = in.Get(http.MethodGet, "/ping"); code == http.StatusOK {
			return
		}
	}
	in.t.Fatalf("not healthy within %s: %s", timeout, body)
}

// BootTimeline waits until the boot's timeline ends with the first answer
// through an exposed socket (ddinit run tells PID 1 of it a moment after
// the answer) and holds dockerd's "API listen on" line, and returns it.
// dockerd logs that line just before it serves, so the line's own time is
// before the answer; but the line comes through the shim's pipe and can
// reach PID 1 after ddinit run has told it of the answer, and the
// timeline takes it late (it counts the line's own time).
func (in *Instance) BootTimeline() []timeline.Step {
	in.t.Helper()
	var st control.Status
	WaitUntil(in.t, 10*time.Second, "the boot's timeline to reach the first answer and dockerd's API line", func() bool {
		_, body := in.Get("GET", "/status")
		st = control.Status{}
		json.Unmarshal([]byte(body), &st)
		return slices.ContainsFunc(st.Timeline, func(s timeline.Step) bool { return strings.HasPrefix(s.Event, "first answer") }) &&
			slices.ContainsFunc(st.Timeline, func(s timeline.Step) bool { return s.Event == "dockerd: API listening (its log)" })
	})
	return st.Timeline
}

// EngineUp reports whether dockerd or containerd runs in the pid
// namespace ns (the instance's: PidNS).
func (in *Instance) EngineUp(ns string) bool {
	return len(FindComm(ns, "dockerd")) > 0 || len(FindComm(ns, "containerd")) > 0
}

// IdlePing is /ping's answer when the engine is stopped on purpose: 200,
// saying idle.
func (in *Instance) IdlePing() bool {
	code, body := in.Get(http.MethodGet, "/ping")
	return code == 200 && strings.Contains(body, "state: idle")
}

// WaitIdle waits until the engine is stopped (idle): dockerd and
// containerd gone from the pid namespace ns, /ping 200 idle.
func (in *Instance) WaitIdle(ns string, within time.Duration) {
	in.t.Helper()
	WaitUntil(in.t, within, "the engine to stop (idle)", func() bool { return !in.EngineUp(ns) && in.IdlePing() })
}

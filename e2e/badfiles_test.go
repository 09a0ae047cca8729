package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// A settings document cut short never keeps the engine down: the next
// boot uses the last good copy (the last change applied), keeps the bad
// file aside and says so in /status, ddinit status and /ping (still 200).
// A PUT while booting is 503 with Retry-After.
func TestTruncatedSettingsDocument(t *testing.T) {
	harness.RequireEnvironment(t)
	data, _ := harness.NewDirs(t)
	in := harness.Start(t, harness.Options{DataDir: data})

	// The control API answers long before the engine on a cold boot.
	var first *http.Response
	for deadline := time.Now().Add(30 * time.Second); first == nil && time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		first = in.PutSettingsResp(`{"generation": 0, "daemonJSON": {"labels": ["too-early=1"]}}`)
	}
	if first == nil || first.StatusCode != http.StatusServiceUnavailable || first.Header.Get("Retry-After") == "" {
		t.Fatalf("PUT /settings during the boot: %+v", first)
	}
	in.WaitPing(60 * time.Second)
	if code, body := in.PutSettings(`{"generation": 0, "daemonJSON": {"labels": ["doc=A"]}}`); code != 200 {
		t.Fatalf("A: %d %s", code, body)
	}
	if code, body := in.PutSettings(`{"generation": 1, "daemonJSON": {"labels": ["doc=B"]}}`); code != 200 {
		t.Fatalf("B: %d %s", code, body)
	}
	in.Stop()

	doc := filepath.Join(data, "etc/ddinit/settings.json")
	if err := os.Truncate(doc, 20); err != nil {
		t.Fatal(err)
	}
	again := harness.Start(t, harness.Options{DataDir: data})
	took := again.WaitPing(60 * time.Second)
	t.Logf("docker answered %s after the boot began", took.Round(time.Millisecond))
	if l := again.Labels(); !strings.Contains(l, "doc=B") {
		t.Fatalf("labels in force: %s, want B's", l)
	}
	st := again.Status()
	if st.SettingsGeneration != 2 || serviceStatus(st, "dockerd").Restarts != 0 || len(st.Recovered) != 1 {
		t.Fatalf("generation %d, dockerd restarts %d, recovered %+v", st.SettingsGeneration, serviceStatus(st, "dockerd").Restarts, st.Recovered)
	}
	kept := st.Recovered[0].KeptAs
	if b, err := os.ReadFile(kept); err != nil || len(b) != 20 || !strings.HasPrefix(kept, doc+".bad-") {
		t.Fatalf("the bad file kept as %q: %d bytes, %v", kept, len(b), err)
	}
	if out, _ := again.CLI("status"); !strings.Contains(out, kept) {
		t.Fatalf("ddinit status does not name the file kept aside:\n%s", out)
	}
	if code, body := again.Get(http.MethodGet, "/ping"); code != 200 || !strings.Contains(body, kept) {
		t.Fatalf("/ping: %d %s", code, body)
	}
	// The document is whole again: a change goes on from B.
	if code, body := again.PutSettings(`{"generation": 2, "daemonJSON": {"labels": ["doc=C"]}}`); code != 200 {
		t.Fatalf("C after the recovery: %d %s", code, body)
	}
}

// A daemon.json in the data store that dockerd cannot use, with no
// settings document: not JSON (kept aside before dockerd reads it), or an
// option dockerd refuses (dockerd says so, and is started again on the
// last daemon.json it accepted). Docker answers either way.
func TestUnusableDaemonJSONAtBoot(t *testing.T) {
	harness.RequireEnvironment(t)
	t.Run("not JSON", func(t *testing.T) {
		data, _ := harness.NewDirs(t)
		path := filepath.Join(data, "etc/docker/daemon.json")
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, []byte(`{"labels": ["cut=1"], "log-le`), 0o644)
		in := harness.Start(t, harness.Options{DataDir: data})
		in.WaitPing(60 * time.Second)
		st := in.Status()
		if len(st.Recovered) != 1 || st.Recovered[0].File != path || !strings.Contains(st.Recovered[0].Reason, "JSON") {
			t.Fatalf("recovered: %+v", st.Recovered)
		}
		if b, _ := os.ReadFile(st.Recovered[0].KeptAs); !strings.Contains(string(b), "log-le") {
			t.Fatalf("the refused file was not kept: %q", b)
		}
		if out, _ := in.CLI("status"); !strings.Contains(out, st.Recovered[0].KeptAs) || !strings.Contains(out, "not valid JSON") {
			t.Fatalf("ddinit status:\n%s", out)
		}
	})
	t.Run("an option dockerd refuses", func(t *testing.T) {
		data, _ := harness.NewDirs(t)
		path := filepath.Join(data, "etc/docker/daemon.json")
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, []byte(`{"labels": ["accepted=1"]}`), 0o644)
		in := harness.Start(t, harness.Options{DataDir: data})
		in.WaitPing(60 * time.Second)
		accepted := filepath.Join(data, "etc/ddinit/daemon.json.accepted")
		within(t, 10*time.Second, "the daemon.json dockerd accepted kept", func() bool {
			b, _ := os.ReadFile(accepted)
			return strings.Contains(string(b), "accepted=1")
		})
		in.Stop()

		os.WriteFile(path, []byte(`{"labels": ["refused=1"], "bogus-option": true}`), 0o644)
		again := harness.Start(t, harness.Options{DataDir: data})
		took := again.WaitPing(60 * time.Second)
		t.Logf("docker answered %s after the boot began", took.Round(time.Millisecond))
		if l := again.Labels(); !strings.Contains(l, "accepted=1") {
			t.Fatalf("labels in force: %s, want the last accepted daemon.json's", l)
		}
		st := again.Status()
		if len(st.Recovered) != 1 || !strings.Contains(st.Recovered[0].Reason, "bogus-option") || !strings.Contains(st.Recovered[0].Using, "accepted") {
			t.Fatalf("recovered: %+v", st.Recovered)
		}
		if b, _ := os.ReadFile(st.Recovered[0].KeptAs); !strings.Contains(string(b), "bogus-option") {
			t.Fatalf("the refused file was not kept: %q", b)
		}
		if out, _ := again.CLI("status"); !strings.Contains(out, st.Recovered[0].KeptAs) || !strings.Contains(out, "bogus-option") {
			t.Fatalf("ddinit status:\n%s", out)
		}
	})
}

// kill -9 of the whole tree in the middle of a settings change: the next
// boot answers with the old settings or the new, never neither.
func TestKillDuringSettingsChange(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, at := range []struct {
		name string
		wait func(t *testing.T, in *harness.Instance)
	}{
		{"as the change arrives", func(*testing.T, *harness.Instance) {}},
		{"while dockerd restarts", func(t *testing.T, in *harness.Instance) {
			within(t, 20*time.Second, "the change applying", func() bool { return in.Status().Applying != "" })
		}},
		{"as dockerd comes back", func(t *testing.T, in *harness.Instance) {
			within(t, 20*time.Second, "the change applying", func() bool { return in.Status().Applying != "" })
			time.Sleep(300 * time.Millisecond)
		}},
	} {
		t.Run(at.name, func(t *testing.T) {
			data, _ := harness.NewDirs(t)
			in := harness.Start(t, harness.Options{DataDir: data})
			in.WaitPing(60 * time.Second)
			if code, body := in.PutSettings(`{"generation": 0, "daemonJSON": {"labels": ["doc=old"]}}`); code != 200 {
				t.Fatalf("old: %d %s", code, body)
			}
			go in.PutSettingsResp(`{"generation": 1, "daemonJSON": {"labels": ["doc=new"]}}`)
			at.wait(t, in)
			in.KillTree()

			again := harness.Start(t, harness.Options{DataDir: data})
			again.WaitPing(60 * time.Second)
			l, st := again.Labels(), again.Status()
			switch {
			case strings.Contains(l, "doc=old") && st.SettingsGeneration == 1:
			case strings.Contains(l, "doc=new") && st.SettingsGeneration == 2:
			default:
				t.Fatalf("after the kill: labels %s with generation %d", l, st.SettingsGeneration)
			}
			t.Logf("in force after the kill: %s (generation %d)", l, st.SettingsGeneration)
		})
	}
}

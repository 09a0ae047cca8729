package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// recoveredNow is /status's recovered list, or false while the control
// API does not answer yet.
func recoveredNow(in *harness.Instance) ([]control.Recovery, bool) {
	c, err := control.NewClient("unix://"+in.ControlSock(), time.Second)
	if err != nil {
		return nil, false
	}
	resp, err := c.Do(context.Background(), http.MethodGet, "/status", false)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	var st control.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return nil, false
	}
	return st.Recovered, true
}

// waitRecovered waits up to d for /status to list file as recovered, and
// returns that recovery; ddinit exiting first fails the test with its
// output.
func waitRecovered(t *testing.T, in *harness.Instance, file string, d time.Duration) control.Recovery {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		recs, _ := recoveredNow(in)
		if i := slices.IndexFunc(recs, func(r control.Recovery) bool { return r.File == file }); i >= 0 {
			return recs[i]
		}
		select {
		case <-in.Done():
			t.Fatalf("ddinit exited before it reported %s: %v", file, in.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("/status did not list %s as recovered within %s", file, d)
	return control.Recovery{}
}

// A configuration folder of the data store that is not a folder (a file
// where etc/ddinit should be, a symlink loop for etc/docker): within
// 10 s the boot has set it aside, kept as it was, and says so in
// /status, ddinit status and the log; then the engine answers. What may
// hold the engine's data (var/lib/docker) is never moved: a clear error
// naming it, within 10 s.
func TestDataStoreFolderThatIsNoFolder(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, c := range []struct {
		entry, says string
		make        func(path string) error
	}{
		{"etc/ddinit", "a regular file", func(path string) error { return os.WriteFile(path, []byte("not a folder"), 0o644) }},
		{"etc/docker", "a symbolic link loop", func(path string) error { return os.Symlink("docker", path) }},
	} {
		t.Run(c.entry, func(t *testing.T) {
			data, _ := harness.NewDirs(t)
			path := filepath.Join(data, c.entry)
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := c.make(path); err != nil {
				t.Fatal(err)
			}
			was, _ := os.Lstat(path)
			in := harness.Start(t, harness.Options{DataDir: data})
			r := waitRecovered(t, in, path, 10*time.Second)
			if !strings.Contains(r.Reason, c.says) || !strings.HasPrefix(r.KeptAs, path+".bad-") {
				t.Fatalf("recovered: %+v", r)
			}
			if kept, err := os.Lstat(r.KeptAs); err != nil || kept.Mode().Type() != was.Mode().Type() {
				t.Fatalf("kept as %s: %v %v, was %v", r.KeptAs, kept, err, was.Mode().Type())
			}
			took := in.WaitPing(60 * time.Second)
			t.Logf("docker answered %s after the boot began", took.Round(time.Millisecond))
			if st, err := os.Stat(path); err != nil || !st.IsDir() {
				t.Fatalf("%s after the boot: %v", c.entry, err)
			}
			if out, _ := in.CLI("status"); !strings.Contains(out, r.KeptAs) {
				t.Fatalf("ddinit status does not name what was set aside:\n%s", out)
			}
			logged := slices.ContainsFunc(in.LogEntries(), func(e map[string]any) bool {
				return e["file"] == path && e["keptAs"] == r.KeptAs
			})
			if !logged {
				t.Fatalf("the log does not say %s was set aside", path)
			}
		})
	}
	t.Run("var/lib/docker", func(t *testing.T) {
		data, _ := harness.NewDirs(t)
		path := filepath.Join(data, "var/lib/docker")
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, []byte("the engine's data?"), 0o644)
		in := harness.Start(t, harness.Options{DataDir: data})
		if code := in.Exited(10 * time.Second); code == 0 {
			t.Fatal("ddinit booted on a data store whose var/lib/docker is a file")
		}
		out := in.Output()
		for _, want := range []string{data, "var/lib/docker is a regular file, not a directory", "move it away"} {
			if !strings.Contains(out, want) {
				t.Fatalf("the failure does not say %q:\n%s", want, harness.Tail(out, 10))
			}
		}
		if b, _ := os.ReadFile(path); string(b) != "the engine's data?" {
			t.Fatal("var/lib/docker was touched")
		}
	})
}

// A settings document that is a FIFO (a plain open waits for a writer
// for ever): the boot keeps it aside as it is, says so in /status, and
// docker answers in the usual time on no document.
func TestSettingsDocumentThatIsAFIFO(t *testing.T) {
	harness.RequireEnvironment(t)
	data, _ := harness.NewDirs(t)
	doc := filepath.Join(data, "etc/ddinit/settings.json")
	os.MkdirAll(filepath.Dir(doc), 0o755)
	if err := syscall.Mkfifo(doc, 0o644); err != nil {
		t.Fatal(err)
	}
	in := harness.Start(t, harness.Options{DataDir: data})
	took := in.WaitPing(60 * time.Second)
	t.Logf("docker answered %s after the boot began", took.Round(time.Millisecond))
	st := in.Status()
	if len(st.Recovered) != 1 || st.Recovered[0].File != doc || !strings.Contains(st.Recovered[0].Reason, "FIFO") || !strings.Contains(st.Recovered[0].Using, "no settings document") {
		t.Fatalf("recovered: %+v", st.Recovered)
	}
	if kept, err := os.Lstat(st.Recovered[0].KeptAs); err != nil || kept.Mode().Type() != os.ModeNamedPipe {
		t.Fatalf("kept as %s: %v %v", st.Recovered[0].KeptAs, kept, err)
	}
	if st.SettingsGeneration != 0 {
		t.Fatalf("generation %d, want none", st.SettingsGeneration)
	}
}

// An image path, or its digest sidecar, that is a FIFO (a plain open
// waits for a writer for ever): the boot fails at once with one line
// naming the file and what it is.
func TestImageThatIsAFIFO(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, fifo := range []string{"docker.iso", "docker.iso.sha256"} {
		t.Run(fifo, func(t *testing.T) {
			dir := t.TempDir()
			pack := filepath.Join(dir, "docker.iso")
			b, err := os.ReadFile(harness.PackISO + ".sha256")
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(pack+".sha256", b, 0o644)
			if fifo == "docker.iso" {
				if err := syscall.Mkfifo(pack, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				os.Symlink(harness.PackISO, pack)
				os.Remove(pack + ".sha256")
				if err := syscall.Mkfifo(pack+".sha256", 0o644); err != nil {
					t.Fatal(err)
				}
			}
			in := harness.Start(t, harness.Options{Pack: pack})
			if code := in.Exited(20 * time.Second); code == 0 {
				t.Fatal("ddinit booted on a FIFO")
			}
			lines := strings.Split(strings.TrimSpace(in.Output()), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "ddinit: boot failed: ") || !strings.Contains(last, filepath.Join(dir, fifo)+": not a regular file: it is a FIFO") {
				t.Fatalf("the failure line does not name the FIFO: %q", last)
			}
			t.Log(last)
		})
	}
}

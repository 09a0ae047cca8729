package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bootPoint is a moment of a cold boot, recognised in /status.
type bootPoint struct {
	name string
	at   func(st control.Status) bool
}

func hasPhase(st control.Status, name string) bool {
	return slices.ContainsFunc(st.Phases, func(p control.Phase) bool { return p.Name == name })
}

var bootPoints = []bootPoint{
	{"the control API answers", func(control.Status) bool { return true }},
	{"verifying and preparing the images", func(st control.Status) bool { return strings.Contains(st.Reason, "verifying") }},
	{"starting containerd", func(st control.Status) bool { return hasPhase(st, "mounts") }},
	{"containerd up and dockerd not yet ready", func(st control.Status) bool { return hasPhase(st, "containerd") && !st.Ready }},
	{"healthy", func(st control.Status) bool { return st.Ready }},
}

// waitForPoint polls /status until p holds and returns the state seen
// then; a boot that went past p faster than the poll is reported as the
// state it was caught in.
func waitForPoint(t *testing.T, in *harness.Instance, p bootPoint) control.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := control.NewClient("unix://"+in.ControlSock(), time.Second)
		if err == nil {
			resp, err := c.Do(t.Context(), http.MethodGet, "/status", false)
			if err == nil {
				var st control.Status
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if err == nil && p.at(st) {
					return st
				}
			}
		}
		select {
		case <-in.Done():
			t.Fatalf("ddinit exited before %q: %v", p.name, in.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	t.Fatalf("the boot never reached %q", p.name)
	return control.Status{}
}

// assertRecovers boots again on dataDir, runs a container, stops cleanly
// and checks that nothing of either run is left.
func assertRecovers(t *testing.T, dataDir string) {
	t.Helper()
	again := harness.Start(t, harness.Options{DataDir: dataDir})
	again.WaitPing(60 * time.Second)
	again.ImportBusybox()
	if out := again.Docker("run", "--rm", "busybox:local", "echo", "recovered"); !strings.Contains(out, "recovered") {
		t.Fatalf("container after the fault printed %q", out)
	}
	ns := again.PidNS()
	if code, _ := again.Stop(); code != 0 {
		t.Fatalf("the boot after the fault exited %d", code)
	}
	assertNothingLeft(t, again, ns)
}

func assertNothingLeft(t *testing.T, in *harness.Instance, ns string) {
	t.Helper()
	// Under the data dir, not on it: a test may give it a mount of its own.
	if m := harness.HostMounts(t, in.DataDir+"/", in.RunDir); len(m) > 0 {
		t.Fatalf("mounts left:\n%s", strings.Join(m, "\n"))
	}
	if left := harness.InNS(ns); len(left) > 0 {
		t.Fatalf("processes left: %+v", left)
	}
	if _, err := netlink.LinkByName("ddinit0"); err == nil {
		t.Fatal("the veth ddinit0 was left behind")
	}
	for _, table := range []string{"nat", "filter"} {
		out, _ := exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
		if strings.Contains(string(out), "ddinit") {
			t.Fatalf("iptables %s rules tagged ddinit left:\n%s", table, out)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(in.DataDir, "isocache"))
	for _, e := range entries {
		if e.Name() == ".lock" || e.Name() == "state.json" {
			continue // the cache's lock and its record of the last boots
		}
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("a partial image cache entry was left: %s", e.Name())
		}
		if _, err := os.Stat(filepath.Join(in.DataDir, "isocache", e.Name(), "entry.json")); err != nil {
			t.Fatalf("an incomplete image cache entry was left: %s", e.Name())
		}
	}
}

// kill -9 of ddinit run, and SIGTERM, at points of a cold boot: the next
// boot on the same data store is healthy and nothing is left behind.
func TestBootFaultsAreHarmless(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, p := range bootPoints {
		t.Run("kill -9 at "+p.name, func(t *testing.T) {
			in := harness.Start(t, harness.Options{})
			ns := in.PidNS()
			st := waitForPoint(t, in, p)
			in.Signal(syscall.SIGKILL)
			in.Exited(30 * time.Second)
			t.Logf("killed while %s: %s", st.State, st.Reason)
			// PID 1 dies with ddinit run, and its namespace with it.
			for deadline := time.Now().Add(10 * time.Second); len(harness.InNS(ns)) > 0 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			assertRecovers(t, in.DataDir)
		})
	}
	for _, p := range []bootPoint{bootPoints[1], bootPoints[2], bootPoints[3]} {
		t.Run("SIGTERM at "+p.name, func(t *testing.T) {
			in := harness.Start(t, harness.Options{})
			ns := in.PidNS()
			waitForPoint(t, in, p)
			in.Signal(syscall.SIGTERM)
			in.Exited(60 * time.Second)
			assertNothingLeft(t, in, ns)
			assertRecovers(t, in.DataDir)
		})
	}
}

// A data store that fills while the version pack is copied in: one line
// naming the file and the cause, the partial entry removed, and the next
// boot, with room again, healthy.
func TestDataStoreFillsDuringImageCopy(t *testing.T) {
	harness.RequireEnvironment(t)
	data := t.TempDir()
	// Room for the base image and its tree, not for the version pack.
	if err := unix.Mount("tmpfs", data, "tmpfs", 0, "size=48m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(data, unix.MNT_DETACH) })
	in := harness.Start(t, harness.Options{DataDir: data})
	if code := in.Exited(60 * time.Second); code == 0 {
		t.Fatal("ddinit booted on a data store without room for the version pack")
	}
	lines := strings.Split(strings.TrimSpace(in.Output()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "ddinit: boot failed: ") || !strings.Contains(last, "no space left on device") || !strings.Contains(last, "docker.iso") {
		t.Fatalf("the failure line does not name the file and the cause: %q", last)
	}
	entries, _ := os.ReadDir(filepath.Join(data, "isocache"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".partial") {
			t.Fatalf("the partial copy was left: %s", e.Name())
		}
	}
	if err := unix.Mount("", data, "", unix.MS_REMOUNT, "size=1g"); err != nil {
		t.Fatal(err)
	}
	assertRecovers(t, data)
}

package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/e2e/harness"
)

// upgradeWorld is what a user has on an engine before an upgrade: a named
// volume with data, a user network with two containers on it (one with a
// restart policy publishing a port, one stopped), an imported image and a
// built one.
const upgradePort = "18431"

func makeUpgradeWorld(t *testing.T, in *harness.Instance) {
	t.Helper()
	in.ImportBusybox()
	in.Docker("volume", "create", "upvol")
	in.Docker("run", "--rm", "-v", "upvol:/d", "busybox:local", "sh", "-c", "echo kept > /d/f")
	in.Docker("network", "create", "upnet")
	in.Docker("run", "-d", "--name", "upweb", "--restart", "always", "--network", "upnet", "-p", upgradePort+":80",
		"busybox:local", "sh", "-c", "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www")
	in.Docker("create", "--name", "upstopped", "--network", "upnet", "busybox:local", "sh", "-c", "echo ran")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox:local\nRUN echo built > /built\n"), 0o644)
	in.Docker("build", "-q", "-t", "upbuilt:1", dir)
	answers(t, "127.0.0.1:"+upgradePort, "served", 30*time.Second)
}

// checkUpgradeWorld checks everything makeUpgradeWorld made is there and
// works on the engine in runs now.
func checkUpgradeWorld(t *testing.T, in *harness.Instance) {
	t.Helper()
	if out := in.Docker("run", "--rm", "-v", "upvol:/d", "busybox:local", "cat", "/d/f"); out != "kept\n" {
		t.Fatalf("the volume's data: %q", out)
	}
	if out := in.Docker("network", "ls", "--format", "{{.Name}}"); !strings.Contains(out, "upnet") {
		t.Fatalf("the user network: %q", out)
	}
	images := in.Docker("images", "--format", "{{.Repository}}:{{.Tag}}")
	for _, want := range []string{"busybox:local", "upbuilt:1"} {
		if !strings.Contains(images, want) {
			t.Fatalf("image %s is gone: %q", want, images)
		}
	}
	if out := in.Docker("run", "--rm", "upbuilt:1", "cat", "/built"); out != "built\n" {
		t.Fatalf("the built image: %q", out)
	}
	harness.WaitUntil(t, 60*time.Second, "the restart-policy container to run again", func() bool {
		out, _ := in.DockerErr("inspect", "-f", "{{.State.Running}}", "upweb")
		return strings.TrimSpace(out) == "true"
	})
	answers(t, "127.0.0.1:"+upgradePort, "served", 30*time.Second)
	if out := in.Docker("start", "-a", "upstopped"); out != "ran\n" {
		t.Fatalf("the stopped container: %q", out)
	}
}

// engineVersion is the running dockerd's version and API version.
func engineVersion(t *testing.T, in *harness.Instance) (string, float64) {
	t.Helper()
	out := strings.Fields(in.Docker("version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"))
	if len(out) != 2 {
		t.Fatalf("docker version: %q", out)
	}
	api, _ := strconv.ParseFloat(out[1], 64)
	return out[0], api
}

// The real upgrade, as a user does it: from the 20.10 pack to the default
// one (dockerd 28.5), at the next boot and live. Everything is there after
// it, containers that ran run again, the published port answers again.
// Going back below is refused unless forced, and forced says what may be
// lost; so is a rollback.
func TestUpgradeFrom2010(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, live := range []bool{false, true} {
		name := "next boot"
		if live {
			name = "live"
		}
		t.Run(name, func(t *testing.T) {
			data, _ := harness.NewDirs(t)
			in := harness.Start(t, harness.Options{DataDir: data, Pack: harness.Pack2010ISO})
			in.WaitPing(60 * time.Second)
			if v, _ := engineVersion(t, in); !strings.HasPrefix(v, "20.10") {
				t.Fatalf("the 20.10 pack runs dockerd %s", v)
			}
			makeUpgradeWorld(t, in)
			args := []string{"pack", "use", harness.PackISO}
			if live {
				args = []string{"pack", "use", "--live", harness.PackISO}
			}
			if out, err := in.CLI(args...); err != nil {
				t.Fatalf("ddinit %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if live {
				harness.WaitUntil(t, 3*time.Minute, "the live switch to finish", func() bool {
					out, err := in.DockerErr("version", "--format", "{{.Server.Version}}")
					return err == nil && strings.TrimSpace(out) == harness.PackDockerVersion
				})
			} else {
				in.Stop()
				in = harness.Start(t, harness.Options{DataDir: data, Pack: harness.Pack2010ISO})
				in.WaitPing(2 * time.Minute)
			}
			if v, api := engineVersion(t, in); v != harness.PackDockerVersion || api < 1.51 {
				t.Fatalf("after the upgrade: dockerd %s, API %v", v, api)
			}
			checkUpgradeWorld(t, in)

			// Back below: refused, naming both versions; forced, it says
			// what may be lost.
			code, body := in.PutPackResp(control.UsePack{Path: harness.Pack2010ISO})
			if code != http.StatusConflict || !strings.Contains(body, harness.PackDockerVersion) || !strings.Contains(body, "20.10") {
				t.Fatalf("a pack below the store's dockerd: %d %s", code, body)
			}
			if out, err := in.CLI("pack", "rollback"); err == nil || !strings.Contains(out, "409") || !strings.Contains(out, harness.PackDockerVersion) {
				t.Fatalf("a rollback below the store's dockerd: %v\n%s", err, out)
			}
			// Forced, either way back says what may be lost (one way per
			// subtest: each changes the next boot's choice).
			if live {
				out, err := in.CLI("pack", "rollback", "--force")
				if err != nil || !strings.Contains(strings.ToLower(out), "warning") {
					t.Fatalf("a forced rollback: %v\n%s", err, out)
				}
			} else {
				code, body = in.PutPackResp(control.UsePack{Path: harness.Pack2010ISO, Force: true})
				if code != http.StatusOK || !strings.Contains(strings.ToLower(body), "warning") {
					t.Fatalf("a forced downgrade: %d %s", code, body)
				}
			}
		})
	}
}

// A new pack whose dockerd cannot start, or that starts, touches the store
// and dies before it is ready, rolls back to 20.10 with everything intact.
func TestFailedUpgradeRollsBackWithTheDataIntact(t *testing.T) {
	harness.RequireEnvironment(t)
	for _, pack := range []string{"broken", "dies-loading"} {
		t.Run(pack, func(t *testing.T) {
			data, _ := harness.NewDirs(t)
			cfg := map[string]any{"settingsDeadline": "30s"}
			in := harness.Start(t, harness.Options{DataDir: data, Pack: harness.Pack2010ISO, Config: cfg})
			in.WaitPing(60 * time.Second)
			makeUpgradeWorld(t, in)
			if out, err := in.CLI("pack", "use", harness.TestPack(t, pack)); err != nil {
				t.Fatalf("ddinit pack use: %v\n%s", err, out)
			}
			in.Stop()
			in = harness.Start(t, harness.Options{DataDir: data, Pack: harness.Pack2010ISO, Config: cfg})
			harness.WaitUntil(t, 3*time.Minute, "the rollback to 20.10", func() bool {
				out, err := in.DockerErr("version", "--format", "{{.Server.Version}}")
				return err == nil && strings.HasPrefix(strings.TrimSpace(out), "20.10")
			})
			in.WaitPing(time.Minute)
			checkUpgradeWorld(t, in)
			st := in.Status()
			if st.Packs == nil || st.Packs.LastFailure == "" {
				t.Fatalf("/status says nothing of the failed pack: %+v", st.Packs)
			}
		})
	}
}

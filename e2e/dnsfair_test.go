package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildStatic builds one of testdata's programs, static, to copy into a
// busybox container.
func buildStatic(t *testing.T, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", out, "./testdata/"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v %s", name, err, b)
	}
	return out
}

// floodCounts is dnsflood's last line: what came back so far.
type floodCounts struct{ sent, fast, servfail, other int }

func (in *instance) floodCounts(container string) floodCounts {
	in.t.Helper()
	var c floodCounts
	lines := strings.Split(strings.TrimSpace(in.docker("logs", container)), "\n")
	fmt.Sscanf(lines[len(lines)-1], "sent %d fast-servfail %d servfail %d other %d", &c.sent, &c.fast, &c.servfail, &c.other)
	return c
}

// One container flooding lookups under a domain whose nameserver drops
// them (a resolver that never answers for that domain) takes no other
// container's DNS: it holds its share of the forwarder's queries in
// flight and is refused beyond it, while another container's 50 lookups
// of a name the distro's resolver serves are all answered.
func TestOneContainersFloodLeavesOthersTheirDNS(t *testing.T) {
	requireEnvironment(t)
	w := newDNSWorld(t)
	w.squat() // 127.0.0.99:53 reaches it: drop.test's nameserver, never answering
	w.dnsmasq("127.0.0.53", "--host-record=intranet.corp,10.20.30.40", "--local=/corp/",
		"--server=/drop.test/127.0.0.99", "--dns-forward-max=100000")
	resolv := resolverFile(t, "127.0.0.53")
	in := start(t, options{netns: w.distro, extra: []string{"--resolv-conf", resolv}})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	flood := buildStatic(t, "dnsflood")

	// 400 new names a second, each held by the forwarder for its 1 s try
	// of the only nameserver: 400 in flight wanted, more than all 256
	// slots (so with one cap shared by all, every other container's
	// lookups were SERVFAIL).
	in.docker("create", "--name", "flood", "busybox:local", "/dnsflood", nsForwarder, "drop.test", "400", "120")
	in.docker("cp", flood, "flood:/dnsflood")
	in.docker("run", "-d", "--name", "probe", "busybox:local", "sleep", "3600")
	in.docker("start", "flood")
	floodIP := strings.TrimSpace(in.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "flood"))
	probeIP := strings.TrimSpace(in.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "probe"))

	// The flood holds its share: its queries beyond are refused at once.
	within(t, 20*time.Second, "the flooding container to be refused beyond its share", func() bool {
		c := in.floodCounts("flood")
		return c.sent > 0 && c.fast > 0
	})
	// Now beyond its share for a second or more: during the lookups below
	// it stays there (400 a second wanted, its share is 32).
	within(t, 10*time.Second, "the flood to have run 2 s", func() bool { return in.floodCounts("flood").sent >= 800 })
	// 50 lookups, one every 0.1 s or so: several of the flood's seconds.
	before := in.floodCounts("flood")
	out, err := in.dockerErr("exec", "probe", "sh", "-c",
		`ok=0; for i in $(seq 50); do out=$(nslookup intranet.corp 2>&1); case "$out" in *10.20.30.40*) ok=$((ok+1));; *) echo "$out";; esac; sleep 0.1; done; echo "answered $ok"`)
	after := in.floodCounts("flood")
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "answered 50") {
		t.Fatalf("another container's 50 lookups during the flood: %v\n%s\n(the flood before: %+v, after: %+v)", err, out, before, after)
	}
	sent, refused := after.sent-before.sent, after.fast-before.fast
	t.Logf("50 lookups answered during the flood; meanwhile the flood sent %d, %d refused at once (its share reached)", sent, refused)
	// 400 a second wanted, 32 in flight for 1 s each granted: most of the
	// flood is refused throughout the lookups.
	if sent < 400 || refused < sent/2 || after.other != 0 {
		t.Fatalf("the flood was not held to its share during the lookups: before %+v, after %+v", before, after)
	}
	// The forwarder says whose share was reached: the flood's, not the
	// other container's.
	var flooded bool
	for _, e := range in.logEntries() {
		if msg, _ := e["msg"].(string); strings.Contains(msg, "share of the queries in flight") {
			switch e["client"] {
			case floodIP:
				flooded = true
			case probeIP:
				t.Fatalf("the looking-up container was held to its share: %v", e)
			}
		}
	}
	if !flooded {
		t.Fatalf("no log of the flooding container (%s) reaching its share", floodIP)
	}
}

// A resolver file that is a FIFO (whose plain open waits for a writer for
// ever) holds neither the boot nor the shutdown: the served names
// resolve, /status names what the file is, ddinit run stops.
func TestResolverFileThatIsAFIFOHoldsNothing(t *testing.T) {
	requireEnvironment(t)
	w := newDNSWorld(t)
	fifo := filepath.Join(t.TempDir(), "resolv.conf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	in := start(t, options{netns: w.distro, extra: []string{"--resolv-conf", fifo}})
	in.waitPing(60 * time.Second)
	in.importBusybox()
	if out := in.docker("run", "--rm", "busybox:local", "sh", "-c", "nslookup gateway.docker.internal"); !strings.Contains(out, "100.64.249.1") {
		t.Fatalf("a served name with the resolver file a FIFO:\n%s", out)
	}
	want := fifo + ": not a regular file: it is a FIFO (named pipe)"
	within(t, 5*time.Second, "/status to name the FIFO", func() bool {
		st := in.status()
		return st.DNS != nil && st.DNS.Error == want
	})
	if code, took := in.stop(); code != 0 {
		t.Fatalf("ddinit run exited %d after %s", code, took)
	}
}

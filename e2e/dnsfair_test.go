package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
)

// floodCounts is dnsflood's last line: what came back so far.
type floodCounts struct{ sent, fast, servfail, other int }

// readFloodCounts reads a dnsflood container's last line.
func readFloodCounts(t *testing.T, in *harness.Instance, container string) floodCounts {
	t.Helper()
	var c floodCounts
	lines := strings.Split(strings.TrimSpace(in.Docker("logs", container)), "\n")
	fmt.Sscanf(lines[len(lines)-1], "sent %d fast-servfail %d servfail %d other %d", &c.sent, &c.fast, &c.servfail, &c.other)
	return c
}

// One container flooding lookups under a domain whose nameserver drops
// them (a resolver that never answers for that domain) takes no other
// container's DNS: it holds its share of the forwarder's queries in
// flight and is refused beyond it, while another container's 50 lookups
// of a name the distro's resolver serves are all answered.
func TestOneContainersFloodLeavesOthersTheirDNS(t *testing.T) {
	harness.RequireEnvironment(t)
	w := harness.NewDNSWorld(t)
	w.Squat() // 127.0.0.99:53 reaches it: drop.test's nameserver, never answering
	w.Dnsmasq("127.0.0.53", "--host-record=intranet.corp,10.20.30.40", "--local=/corp/",
		"--server=/drop.test/127.0.0.99", "--dns-forward-max=100000")
	resolv := harness.ResolverFile(t, "127.0.0.53")
	in := harness.Start(t, harness.Options{Netns: w.Distro, Extra: []string{"--resolv-conf", resolv}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	flood := harness.BuildStatic(t, "dnsflood")

	// 400 new names a second, each held by the forwarder for its 1 s try
	// of the only nameserver: 400 in flight wanted, more than all 256
	// slots (so with one cap shared by all, every other container's
	// lookups were SERVFAIL).
	in.Docker("create", "--name", "flood", "busybox:local", "/dnsflood", harness.NSForwarder, "drop.test", "400", "120")
	in.Docker("cp", flood, "flood:/dnsflood")
	in.Docker("run", "-d", "--name", "probe", "busybox:local", "sleep", "3600")
	in.Docker("start", "flood")
	floodIP := strings.TrimSpace(in.Docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "flood"))
	probeIP := strings.TrimSpace(in.Docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "probe"))

	// The flood holds its share: its queries beyond are refused at once.
	within(t, 20*time.Second, "the flooding container to be refused beyond its share", func() bool {
		c := readFloodCounts(t, in, "flood")
		return c.sent > 0 && c.fast > 0
	})
	// Now beyond its share for a second or more: during the lookups below
	// it stays there (400 a second wanted, its share is 32).
	within(t, 10*time.Second, "the flood to have run 2 s", func() bool { return readFloodCounts(t, in, "flood").sent >= 800 })
	// 50 lookups, one every 0.1 s or so: several of the flood's seconds.
	before := readFloodCounts(t, in, "flood")
	out, err := in.DockerErr("exec", "probe", "sh", "-c",
		`ok=0; for i in $(seq 50); do out=$(nslookup intranet.corp 2>&1); case "$out" in *10.20.30.40*) ok=$((ok+1));; *) echo "$out";; esac; sleep 0.1; done; echo "answered $ok"`)
	after := readFloodCounts(t, in, "flood")
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
	for _, e := range in.LogEntries() {
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
	harness.RequireEnvironment(t)
	w := harness.NewDNSWorld(t)
	fifo := filepath.Join(t.TempDir(), "resolv.conf")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	in := harness.Start(t, harness.Options{Netns: w.Distro, Extra: []string{"--resolv-conf", fifo}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()
	if out := in.Docker("run", "--rm", "busybox:local", "sh", "-c", "nslookup gateway.docker.internal"); !strings.Contains(out, "100.64.249.1") {
		t.Fatalf("a served name with the resolver file a FIFO:\n%s", out)
	}
	want := fifo + ": not a regular file: it is a FIFO (named pipe)"
	within(t, 5*time.Second, "/status to name the FIFO", func() bool {
		st := in.Status()
		return st.DNS != nil && st.DNS.Error == want
	})
	if code, took := in.Stop(); code != 0 {
		t.Fatalf("ddinit run exited %d after %s", code, took)
	}
}

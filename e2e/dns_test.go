package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/e2e/harness"
	"github.com/miekg/dns"
)

// nameserversHere fails the test unless every nameserver in a container's
// resolver file is an address of this machine: dockerd falls back to
// public servers when it finds only loopback ones, and no test query may
// leave the machine.
func nameserversHere(t *testing.T, resolv string, allowed ...string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(resolv, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			n++
			if !slicesContains(allowed, f[1]) {
				t.Fatalf("a container's resolver file names %s, not an address of this machine's test world:\n%s", f[1], resolv)
			}
		}
	}
	if n == 0 {
		t.Fatalf("a container's resolver file names no nameserver:\n%s", resolv)
	}
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Containers resolve names as the distro does, through ddinit's forwarder:
// a resolver on the distro's loopback (beside a program bound to
// 0.0.0.0:53), followed when WSL replaces the file, SERVFAIL when no server
// answers; and host.docker.internal and gateway.docker.internal reach the
// Windows host and the distro, however the user sets DNS.
func TestNamesResolveAsTheDistroDoes(t *testing.T) {
	harness.RequireEnvironment(t)
	w := harness.NewDNSWorld(t)
	w.Squat()
	corp := w.Dnsmasq("127.0.0.53", "--host-record=intranet.corp,10.20.30.40", "--local=/corp/")
	resolv := harness.ResolverFile(t, "127.0.0.53")
	w.ServeText(w.Win, harness.WinAddr+":8181", "hello from windows")
	w.ServeText(w.Distro, "0.0.0.0:8282", "hello from the distro")

	in := harness.Start(t, harness.Options{Netns: w.Distro, Extra: []string{"--resolv-conf", resolv}})
	in.WaitPing(60 * time.Second)
	in.ImportBusybox()

	// The default bridge, a user network (dockerd's embedded DNS asks the
	// forwarder) and a compose service.
	out := in.Docker("run", "--rm", "busybox:local", "sh", "-c", "cat /etc/resolv.conf; echo ---; nslookup intranet.corp")
	resolvConf, lookup, _ := strings.Cut(out, "---")
	nameserversHere(t, resolvConf, harness.NSForwarder)
	if !strings.Contains(resolvConf, "search corp") || !strings.Contains(lookup, "10.20.30.40") {
		t.Fatalf("on the default bridge:\n%s", out)
	}
	in.Docker("network", "create", "dnsnet")
	out = in.Docker("run", "--rm", "--network", "dnsnet", "busybox:local", "sh", "-c", "cat /etc/resolv.conf; echo ---; nslookup intranet.corp")
	resolvConf, lookup, _ = strings.Cut(out, "---")
	nameserversHere(t, resolvConf, "127.0.0.11")
	if !strings.Contains(lookup, "10.20.30.40") {
		t.Fatalf("on a user network:\n%s", out)
	}
	project := t.TempDir()
	os.WriteFile(filepath.Join(project, "docker-compose.yml"), []byte("version: \"3\"\nservices:\n  app:\n    image: busybox:local\n    command: sh -c \"nslookup intranet.corp\"\n"), 0o644)
	compose := exec.Command("docker-compose", "-p", "dnstest", "run", "--rm", "app")
	compose.Dir = project
	compose.Env = append(os.Environ(), "DOCKER_HOST=unix://"+in.Sock)
	if b, err := compose.CombinedOutput(); err != nil || !strings.Contains(string(b), "10.20.30.40") {
		t.Fatalf("a compose service: %v\n%s", err, b)
	}

	// WSL replaces the file (a VPN connects): a running container resolves
	// the VPN's names within 2 s, nothing restarted.
	in.Docker("run", "-d", "--name", "resident", "busybox:local", "sleep", "3600")
	vpn := w.Dnsmasq("127.0.0.54", "--host-record=vpn.corp,10.50.60.70", "--local=/corp/")
	harness.ReplaceResolver(t, resolv, "127.0.0.54")
	took := within(t, 2*time.Second+time.Second, "a running container to resolve the VPN's name", func() bool {
		out, _ := in.DockerErr("exec", "resident", "sh", "-c", "nslookup vpn.corp")
		return strings.Contains(out, "10.50.60.70")
	})
	t.Logf("the VPN's names resolved %s after the file was replaced (each try is a docker exec)", took)

	// The Windows host and the distro, by name.
	if out := in.Docker("run", "--rm", "busybox:local", "sh", "-c", "wget -qO- http://host.docker.internal:8181/"); out != "hello from windows" {
		t.Fatalf("host.docker.internal: %q", out)
	}
	if out := in.Docker("run", "--rm", "busybox:local", "sh", "-c", "wget -qO- http://gateway.docker.internal:8282/"); out != "hello from the distro" {
		t.Fatalf("gateway.docker.internal: %q", out)
	}

	// The distro's default route changes (a VPN takes it): the name
	// follows, with no restart.
	if r := w.Query(harness.NSForwarder, "host.docker.internal", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != harness.WinAddr {
		t.Fatalf("host.docker.internal: %v", r.Answer)
	}
	if out, err := exec.Command("ip", "-n", "ddinit-e2e-distro", "route", "replace", "default", "via", "198.51.100.3").CombinedOutput(); err != nil {
		t.Fatalf("change the distro's default route: %v %s", err, out)
	}
	within(t, 3*time.Second, "host.docker.internal to follow the distro's new default route", func() bool {
		r := w.Query(harness.NSForwarder, "host.docker.internal", dns.TypeA)
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "198.51.100.3"
	})
	if r := w.Query(harness.NSForwarder, "host.docker.internal", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA of host.docker.internal: %s %v (want NOERROR, no answer)", dns.RcodeToString[r.Rcode], r.Answer)
	}
	exec.Command("ip", "-n", "ddinit-e2e-distro", "route", "replace", "default", "via", harness.WinAddr).Run()

	// Every upstream stopped (queries to them now reach the program on
	// 0.0.0.0:53, which never answers): SERVFAIL, quickly, not a hang —
	// timed with one query from the distro, and seen by a container.
	corp.Process.Kill()
	vpn.Process.Kill()
	start := time.Now()
	if r := w.Query(harness.NSForwarder, "vpn.corp", dns.TypeA); r.Rcode != dns.RcodeServerFailure || time.Since(start) > 3*time.Second {
		t.Fatalf("with every nameserver stopped, after %s: %s", time.Since(start), dns.RcodeToString[r.Rcode])
	}
	t.Logf("SERVFAIL %s after the query, every nameserver stopped", time.Since(start).Round(time.Millisecond))
	if out, _ := in.DockerErr("exec", "resident", "sh", "-c", "nslookup vpn.corp"); !strings.Contains(out, "SERVFAIL") {
		t.Fatalf("a container's lookup with every nameserver stopped:\n%s", out)
	}
	var st struct {
		DNS struct {
			Listen      []string `json:"listen"`
			Servers     []string `json:"servers"`
			Answered    uint64   `json:"answered"`
			Failed      uint64   `json:"failed"`
			LastFailure *struct {
				Name string `json:"name"`
			} `json:"lastFailure"`
		} `json:"dns"`
	}
	within(t, 3*time.Second, "/status to show the forwarder's failure", func() bool {
		_, body := in.Get(http.MethodGet, "/status")
		return json.Unmarshal([]byte(body), &st) == nil && st.DNS.LastFailure != nil && st.DNS.LastFailure.Name == "vpn.corp."
	})
	if len(st.DNS.Servers) != 1 || st.DNS.Servers[0] != "127.0.0.54" || st.DNS.Answered == 0 || st.DNS.Failed == 0 {
		t.Fatalf("/status dns: %+v", st.DNS)
	}

	// The user names their own DNS (a server that answers NXDOMAIN for
	// everything): the two names still resolve, through /etc/hosts.
	w.Dnsmasq(harness.DistroAddr, "--address=/#/")
	out = in.Docker("run", "--rm", "--dns", harness.DistroAddr, "busybox:local", "sh", "-c",
		"cat /etc/resolv.conf; echo ---; wget -qO- http://host.docker.internal:8181/; echo; wget -qO- http://gateway.docker.internal:8282/")
	resolvConf, got, _ := strings.Cut(out, "---")
	nameserversHere(t, resolvConf, harness.DistroAddr)
	if !strings.Contains(got, "hello from windows") || !strings.Contains(got, "hello from the distro") {
		t.Fatalf("with --dns %s:\n%s", harness.DistroAddr, out)
	}
	if code, body := in.PutSettings(fmt.Sprintf(`{"generation": 0, "daemonJSON": {"dns": [%q]}}`, harness.DistroAddr)); code != 200 {
		t.Fatalf("settings with daemon.json dns: %d %s", code, body)
	}
	in.WaitPing(60 * time.Second)
	out = in.Docker("run", "--rm", "busybox:local", "sh", "-c",
		"cat /etc/resolv.conf; echo ---; nslookup intranet.corp; wget -qO- http://host.docker.internal:8181/; echo; wget -qO- http://gateway.docker.internal:8282/")
	resolvConf, got, _ = strings.Cut(out, "---")
	nameserversHere(t, resolvConf, harness.DistroAddr)
	if !strings.Contains(got, "NXDOMAIN") || !strings.Contains(got, "hello from windows") || !strings.Contains(got, "hello from the distro") {
		t.Fatalf("with daemon.json dns %s:\n%s", harness.DistroAddr, out)
	}
}

func netDialTimeout(network, addr string) (net.Conn, error) {
	return net.DialTimeout(network, addr, 200*time.Millisecond)
}

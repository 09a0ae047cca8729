package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
)

// The DNS line says where the forwarder listens, whom it asks and how it
// fares; the last failure names the query and why; a forwarder that is
// not there says why in one line.
func TestStatusPrintsDNS(t *testing.T) {
	var b bytes.Buffer
	printDNS(&b, &control.DNSState{
		Listen: []string{"100.64.249.2:53"}, Servers: []string{"127.0.0.53"}, Answered: 12, Failed: 1,
		LastFailure: &control.DNSFailure{Name: "vpn.corp.", Reason: "127.0.0.53: no answer", At: time.Now().Add(-5 * time.Second)},
	})
	out := b.String()
	for _, want := range []string{"dns: on 100.64.249.2:53, forwarding to 127.0.0.53 (12 answered, 1 failed)", "last failure: vpn.corp. 5s ago: 127.0.0.53: no answer"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
	b.Reset()
	printDNS(&b, &control.DNSState{Error: "no link to the namespace"})
	if b.String() != "dns: no link to the namespace\n" {
		t.Fatalf("got %q", b.String())
	}
}

// ddinit status lists the distros from their proxies' state files, with
// what each linked and kept of its own, and the tools offered; what a
// distro wrote is printed without a control sequence in it.
func TestStatusListsTheDistros(t *testing.T) {
	shared := t.TempDir()
	states := filepath.Join(shared, config.SharedDistroStates)
	current := filepath.Join(shared, config.SharedCLITools, "0123456789ab")
	os.MkdirAll(states, 0o755)
	os.MkdirAll(current, 0o755)
	os.Symlink("0123456789ab", filepath.Join(shared, config.SharedCLITools, clitools.Current))
	os.WriteFile(filepath.Join(current, clitools.ManifestFile), []byte(`{"components":[{"name":"docker","version":"29.10.0"}]}`), 0o644)
	os.WriteFile(filepath.Join(states, "Ubuntu.json"), []byte(`{"distro":"Ubuntu","linked":["/usr/local/bin/docker"]}`), 0o644)
	os.WriteFile(filepath.Join(states, "Debian.json"), []byte(`{"distro":"Debian","leftAlone":[{"tool":"docker","path":"/usr/bin/docker\u001b[2J"}]}`), 0o644)
	os.WriteFile(filepath.Join(states, "Bad.json"), []byte(`not json`), 0o644)
	os.WriteFile(filepath.Join(states, "Kube.json"), []byte(`{"distro":"Kube","linked":["/usr/local/bin/kubectl"],"kubeconfig":{"user":"me","file":"/home/me/.kube/config","merged":"0123456789ab","offered":true}}`), 0o644)
	os.WriteFile(filepath.Join(states, "Off.json"), []byte(`{"distro":"Off","kubeconfig":{"user":"me","file":"/home/me/.kube/config","merged":"0123456789ab","offered":false}}`), 0o644)
	os.WriteFile(filepath.Join(states, "Broken.json"), []byte(`{"distro":"Broken","kubeconfig":{"user":"me","file":"/home/me/.kube/config","offered":true,"error":"/home/me/.kube/config: left as it is: it does not parse\u001b[2J"}}`), 0o644)
	var out strings.Builder
	printDistros(&out, shared)
	for _, want := range []string{
		"CLI tools offered to the distros: docker 29.10.0\n",
		"distro Ubuntu: linked /usr/local/bin/docker",
		"distro Debian: its own docker kept (/usr/bin/docker?[2J)",
		"distro Bad: unreadable state",
		"distro Kube: linked /usr/local/bin/kubectl; docker-desktop context in /home/me/.kube/config (me)",
		"distro Off: no CLI tool linked; docker-desktop context in /home/me/.kube/config (me), Kubernetes off",
		"distro Broken: no CLI tool linked; docker-desktop context not in /home/me/.kube/config (me): /home/me/.kube/config: left as it is: it does not parse?[2J",
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("no %q in:\n%s", want, out.String())
		}
	}
	if strings.ContainsRune(out.String(), 0x1b) {
		t.Fatalf("a control sequence printed:\n%q", out.String())
	}
}

package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

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

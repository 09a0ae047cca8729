package pid1

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ddinit/ddinit/settings"
	"github.com/ddinit/ddinit/wire"
)

// A proxy on the distro's loopback is reached through a relay on the
// link's namespace end; any other is used as given; NO_PROXY always keeps
// the loopback, the link and ddinit's two names away from the proxy.
func TestPlanProxy(t *testing.T) {
	inner, subnet := netip.MustParseAddr("100.64.249.2"), netip.MustParsePrefix("100.64.249.2/30")
	plan, err := planProxy(&settings.Proxy{HTTP: "http://127.0.0.1:3128", HTTPS: "http://user:pw@proxy.corp:8080", NoProxy: " corp.example ,localhost"}, inner, subnet)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Env["HTTP_PROXY"] != "http://100.64.249.2:3128" || plan.Env["HTTPS_PROXY"] != "http://user:pw@proxy.corp:8080" {
		t.Fatalf("env %v", plan.Env)
	}
	if !slices.Equal(plan.Relays, []wire.Relay{{Listen: "100.64.249.2:3128", Dial: "127.0.0.1:3128"}}) {
		t.Fatalf("relays %v", plan.Relays)
	}
	if plan.Env["NO_PROXY"] != "localhost,127.0.0.0/8,::1,100.64.249.0/30,host.docker.internal,gateway.docker.internal,corp.example" {
		t.Fatalf("NO_PROXY %q", plan.Env["NO_PROXY"])
	}
	// One loopback proxy for both: one relay; localhost with no port: the
	// scheme's.
	plan, err = planProxy(&settings.Proxy{HTTP: "http://localhost", HTTPS: "http://localhost"}, inner, subnet)
	if err != nil || len(plan.Relays) != 1 || plan.Relays[0].Dial != "localhost:80" || plan.Env["HTTPS_PROXY"] != "http://100.64.249.2:80" {
		t.Fatalf("localhost: %+v %v", plan, err)
	}
	if _, err := planProxy(&settings.Proxy{HTTP: "http://127.0.0.1:3128", HTTPS: "http://127.0.0.2:3128"}, inner, subnet); err == nil || !strings.Contains(err.Error(), "port 3128") {
		t.Fatalf("two loopback proxies on one port: %v", err)
	}
	for _, none := range []*settings.Proxy{nil, {}, {NoProxy: "x"}} {
		if plan, err := planProxy(none, inner, subnet); err != nil || len(plan.Env) != 0 || len(envList(plan)) != 0 {
			t.Fatalf("no proxy %+v: %+v %v", none, plan, err)
		}
	}
}

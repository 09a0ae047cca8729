package settings

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A proxy or CA dockerd could not use is refused before anything
// changes, naming the field and why.
func TestParseRefusesABadProxyOrCA(t *testing.T) {
	ca := testCAPEM(t)
	jsonString := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	for body, field := range map[string]string{
		`{"proxy": {"http": "proxy.corp:3128"}}`:                                                                 "proxy.http",
		`{"proxy": {"https": "ftp://proxy.corp:21"}}`:                                                            "proxy.https",
		`{"proxy": {"http": "http://:3128"}}`:                                                                    "proxy.http",
		`{"proxy": {"http": "http://proxy.corp:port"}}`:                                                          "proxy.http",
		`{"proxy": {"http": "http://proxy.corp:3128/path"}}`:                                                     "proxy.http",
		`{"proxy": {"htpp": "http://proxy.corp:3128"}}`:                                                          "proxy",
		`{"proxy": "http://proxy.corp:3128"}`:                                                                    "proxy",
		`{"proxy": {"noProxy": "a,\nb"}}`:                                                                        "proxy.noProxy",
		`{"trustedCAs": "` + strings.ReplaceAll(ca, "\n", `\n`) + `"}`:                                           "trustedCAs",
		`{"trustedCAs": ["not a certificate"]}`:                                                                  "trustedCAs",
		`{"trustedCAs": [` + jsonString(ca[:len(ca)/2]) + `]}`:                                                   "trustedCAs",
		`{"trustedCAs": [` + jsonString("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") + `]}`: "trustedCAs",
		`{"trustedCAs": [` + jsonString(ca+"trailing junk") + `]}`:                                               "trustedCAs",
	} {
		_, err := Parse([]byte(body), owned)
		var inv *Invalid
		if !errors.As(err, &inv) || inv.Field != field || !errdefs.IsInvalidArgument(err) {
			t.Errorf("%.80s: %v, want the field %s named", body, err, field)
		}
	}
	p, err := Parse([]byte(`{"proxy": {"http": "http://127.0.0.1:3128", "https": "http://user:pw@proxy.corp", "noProxy": "corp.example, .internal"}, "trustedCAs": [`+jsonString(ca+ca)+`]}`), owned)
	if err != nil || p.Proxy.HTTP != "http://127.0.0.1:3128" || len(p.TrustedCAs) != 1 {
		t.Fatalf("a valid proxy and CAs: %+v %v", p, err)
	}
}

// The proxy and CAs are set before dockerd restarts, kept when a document
// leaves them out, cleared by {} and [], and rolled back with dockerd's
// refusal.
func TestPutAppliesTheEnvironment(t *testing.T) {
	a, root := newApplier(t)
	e := booted(t, a, root)
	ca, _ := json.Marshal(testCAPEM(t))
	v, err := a.Put([]byte(`{"generation": 0, "proxy": {"http": "http://127.0.0.1:3128"}, "trustedCAs": [` + string(ca) + `]}`))
	if err != nil || v.Generation != 1 {
		t.Fatalf("a proxy and a CA: %+v %v", v, err)
	}
	if e.runningEnv.Proxy == nil || e.runningEnv.Proxy.HTTP != "http://127.0.0.1:3128" || len(e.runningEnv.TrustedCAs) != 1 {
		t.Fatalf("dockerd restarted with %+v", e.runningEnv)
	}
	restarts := e.restarts
	// Left out: kept, and nothing restarts for an unchanged environment.
	if v, err := a.Put([]byte(`{"generation": 1, "kubernetes": false}`)); err != nil || v.Settings.Proxy == nil || len(v.Settings.TrustedCAs) != 1 {
		t.Fatalf("a document without them: %+v %v", v, err)
	}
	if e.restarts != restarts {
		t.Fatal("dockerd restarted for an unchanged environment")
	}
	// Refused: rolled back, the previous environment in force again.
	_, err = a.Put([]byte(`{"generation": 2, "proxy": {"http": "http://refused.example:3128"}}`))
	if !IsRolledBack(err) || e.runningEnv.Proxy == nil || e.runningEnv.Proxy.HTTP != "http://127.0.0.1:3128" || e.env.Proxy.HTTP != "http://127.0.0.1:3128" {
		t.Fatalf("a refused proxy: %v, running %+v, next start %+v", err, e.runningEnv.Proxy, e.env.Proxy)
	}
	// Cleared, and stored so: the next boot starts without them.
	if _, err := a.Put([]byte(`{"generation": 2, "proxy": {}, "trustedCAs": []}`)); err != nil {
		t.Fatal(err)
	}
	if e.runningEnv.Proxy == nil || *e.runningEnv.Proxy != (Proxy{}) || len(e.runningEnv.TrustedCAs) != 0 {
		t.Fatalf("cleared: %+v", e.runningEnv)
	}
	again := &Applier{Locate: func(rel string) string { return filepath.Join(root, rel) }, Forced: forced, Log: quietLog(), Now: time.Now}
	if err := again.Load(nil); err != nil {
		t.Fatal(err)
	}
	if env := again.Environment(); env.Proxy == nil || env.Proxy.HTTP != "" || len(env.TrustedCAs) != 0 {
		t.Fatalf("the next boot's environment: %+v", env)
	}
}

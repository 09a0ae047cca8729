package dockerproxy

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func windows(mounted ...string) Translator {
	return WindowsPaths{Inside: "/run/desktop/mnt/host", Mounted: func(l string) bool {
		for _, m := range mounted {
			if m == l {
				return true
			}
		}
		return false
	}}.Translate
}

func TestWindowsPathsMapToTheDrivesInside(t *testing.T) {
	tr := windows("c")
	for src, want := range map[string]string{
		`C:\Users\me\src`:   "/run/desktop/mnt/host/c/Users/me/src",
		`C:/Users/me/src`:   "/run/desktop/mnt/host/c/Users/me/src",
		`c:\Users\me\src\`:  "/run/desktop/mnt/host/c/Users/me/src",
		`/c/Users/me/src`:   "/run/desktop/mnt/host/c/Users/me/src",
		`//c/Users/me/src`:  "/run/desktop/mnt/host/c/Users/me/src",
		`C:\`:               "/run/desktop/mnt/host/c",
		`C:\a\..\..\..\etc`: "/run/desktop/mnt/host/c/etc",
	} {
		got, ok, err := tr(src, FromBinds)
		if err != nil || !ok || got != want {
			t.Errorf("%s: %q %v %v, want %q", src, got, ok, err, want)
		}
	}
	for _, src := range []string{"myvolume", "/var/lib/x", "/run/desktop/mnt/host/c/x", "/cc/x", "relative/c"} {
		if got, ok, err := tr(src, FromBinds); ok || err != nil {
			t.Errorf("%s is not a Windows path, got %q %v %v", src, got, ok, err)
		}
	}
	if _, _, err := tr(`D:\data`, FromMounts); err == nil || !strings.Contains(err.Error(), `D:\data`) || !strings.Contains(err.Error(), "drive D:") {
		t.Errorf("an unmounted drive: %v", err)
	}
}

func TestRewriteCreateKeepsWhatItDoesNotRewrite(t *testing.T) {
	body := `{"Image":"busybox","FutureField":{"nested":[1,2,{"x":null}]},"HostConfig":{"Binds":["C:\\Users\\me\\src:/src:ro","named:/data","/engine/path:/p"],` +
		`"Mounts":[{"Type":"bind","Source":"C:/Users/me/f.txt","Target":"/f","ReadOnly":true,"BindOptions":{"Propagation":"rslave"},"NewOption":7},` +
		`{"Type":"volume","Source":"vol","Target":"/v"}],"Memory":123,"UnknownHostField":"kept"}}`
	out, err := RewriteCreate([]byte(body), windows("c"), "")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Image       string
		FutureField json.RawMessage
		HostConfig  struct {
			Binds            []string
			Mounts           []map[string]any
			Memory           int
			UnknownHostField string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.HostConfig.Binds, " ") != "/run/desktop/mnt/host/c/Users/me/src:/src:ro named:/data /engine/path:/p" {
		t.Errorf("binds: %v", got.HostConfig.Binds)
	}
	m := got.HostConfig.Mounts
	if m[0]["Source"] != "/run/desktop/mnt/host/c/Users/me/f.txt" || m[0]["ReadOnly"] != true || m[0]["NewOption"] != float64(7) ||
		m[0]["BindOptions"].(map[string]any)["Propagation"] != "rslave" || m[1]["Source"] != "vol" {
		t.Errorf("mounts: %v", m)
	}
	if string(got.FutureField) != `{"nested":[1,2,{"x":null}]}` || got.Image != "busybox" || got.HostConfig.Memory != 123 || got.HostConfig.UnknownHostField != "kept" {
		t.Errorf("fields not rewritten were changed: %s", out)
	}
	same := `{"Image":"busybox","HostConfig":{"Binds":["named:/data"]},"Odd":  1}`
	if out, err := RewriteCreate([]byte(same), windows("c"), "io.test"); err != nil || string(out) != same {
		t.Errorf("a body with nothing to rewrite changed: %s %v", out, err)
	}
	if _, err := RewriteCreate([]byte(`{"HostConfig":{"Binds":["E:\\x:/x"]}}`), windows("c"), ""); err == nil || !strings.Contains(err.Error(), "drive E:") {
		t.Errorf("unmounted drive: %v", err)
	}
	for _, bad := range []string{`[]`, `{"HostConfig":[]}`, `{"HostConfig":{"Binds":"x"}}`, `{"HostConfig":{"Mounts":[{"Type":"bind","Source":1}]}}`, `{`} {
		if _, err := RewriteCreate([]byte(bad), windows("c"), ""); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func FuzzRewriteCreate(f *testing.F) {
	f.Add([]byte(`{"HostConfig":{"Binds":["C:\\x:/x:ro","v:/v"],"Mounts":[{"Type":"bind","Source":"/c/y"}]}}`))
	f.Add([]byte(`{"HostConfig":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := RewriteCreate(body, windows("c"), "io.test")
		if err == nil && !json.Valid(out) {
			t.Fatalf("rewrote %q into invalid JSON %q", body, out)
		}
	})
}

func TestRewriteCreateLabelsWhatItRewrote(t *testing.T) {
	body := `{"Image":"x","Labels":{"keep":"me"},"HostConfig":{"Binds":["/c/src:/src"]}}`
	out, err := RewriteCreate([]byte(body), windows("c"), "io.ddinit.binds")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Labels map[string]string }
	json.Unmarshal(out, &got)
	var binds map[string]string
	if got.Labels["keep"] != "me" || json.Unmarshal([]byte(got.Labels["io.ddinit.binds"]), &binds) != nil || binds["/run/desktop/mnt/host/c/src"] != "/c/src" {
		t.Fatalf("labels: %v", got.Labels)
	}
}

// A create that passes two proxies (a distro's, then the shared socket's)
// keeps both rewrites in its label.
func TestLabelMergedAcrossProxies(t *testing.T) {
	distro := func(src string, _ SourceKind) (string, bool, error) {
		if strings.HasPrefix(src, "/home/") {
			return "/run/desktop/bind-mounts/Ubuntu/aaaa", true, nil
		}
		return "", false, nil
	}
	windows := func(src string, _ SourceKind) (string, bool, error) {
		if strings.HasPrefix(src, `C:\`) {
			return "/run/desktop/mnt/host/c/x", true, nil
		}
		return "", false, nil
	}
	body := []byte(`{"Image":"i","Labels":{"keep":"me"},"HostConfig":{"Binds":["/home/me/p:/a","C:\\x:/b"]}}`)
	once, err := RewriteCreate(body, distro, "io.ddinit.proxy.binds")
	if err != nil {
		t.Fatal(err)
	}
	twice, err := RewriteCreate(once, windows, "io.ddinit.proxy.binds")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Labels map[string]string }
	if err := json.Unmarshal(twice, &got); err != nil {
		t.Fatal(err)
	}
	var binds map[string]string
	json.Unmarshal([]byte(got.Labels["io.ddinit.proxy.binds"]), &binds)
	if got.Labels["keep"] != "me" || binds["/run/desktop/bind-mounts/Ubuntu/aaaa"] != "/home/me/p" || binds["/run/desktop/mnt/host/c/x"] != `C:\x` {
		t.Fatalf("labels after two proxies: %v", got.Labels)
	}
}

// The two names go into /etc/hosts only for a container that needs them
// (here: one that sets its own DNS), and never over an entry the user gave.
func TestAddHostsOnlyWhenNeededAndNeverOverTheUsers(t *testing.T) {
	names := func() map[string]string {
		return map[string]string{"host.docker.internal": "172.20.0.1", "gateway.docker.internal": "100.64.249.1"}
	}
	edit := AddHosts(names, (*Create).SetsDNS)
	plain := `{"Image":"busybox","HostConfig":{"Binds":[]}}`
	out, err := EditCreate([]byte(plain), edit)
	if err != nil || string(out) != plain {
		t.Fatalf("a create without DNS changed: %s %v", out, err)
	}
	withDNS := `{"Image":"busybox","HostConfig":{"Dns":["10.0.0.53"],"ExtraHosts":["HOST.docker.internal:10.9.9.9","db:10.1.1.1"]}}`
	out, err = EditCreate([]byte(withDNS), edit)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		HostConfig struct {
			Dns        []string
			ExtraHosts []string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := []string{"HOST.docker.internal:10.9.9.9", "db:10.1.1.1", "gateway.docker.internal:100.64.249.1"}
	if !slices.Equal(got.HostConfig.ExtraHosts, want) || !slices.Equal(got.HostConfig.Dns, []string{"10.0.0.53"}) {
		t.Fatalf("ExtraHosts %v, want %v (Dns %v)", got.HostConfig.ExtraHosts, want, got.HostConfig.Dns)
	}
	// No HostConfig at all, and the daemon's DNS set: one is made.
	out, err = EditCreate([]byte(`{"Image":"busybox"}`), AddHosts(names, func(*Create) bool { return true }))
	if err != nil || !strings.Contains(string(out), `"ExtraHosts":["gateway.docker.internal:100.64.249.1","host.docker.internal:172.20.0.1"]`) {
		t.Fatalf("no HostConfig: %s %v", out, err)
	}
	// A container on another's network gets none: dockerd refuses them.
	shared := `{"Image":"busybox","HostConfig":{"Dns":["10.0.0.53"],"NetworkMode":"container:web"}}`
	if out, err := EditCreate([]byte(shared), edit); err != nil || string(out) != shared {
		t.Fatalf("on another container's network: %s %v", out, err)
	}
	if _, err := EditCreate([]byte(`{"HostConfig":{"Dns":["1.1.1.1"],"ExtraHosts":"x"}}`), edit); err == nil {
		t.Fatal("ExtraHosts that is not a list was taken")
	}
}

// Proxy variables go into a new container's environment in both cases,
// unless it sets them itself in either case (empty: the user's opt-out).
func TestAddEnvUnlessTheRequestSetsIt(t *testing.T) {
	vars := func() map[string]string {
		return map[string]string{"HTTP_PROXY": "http://100.64.249.2:3128", "NO_PROXY": "localhost"}
	}
	out, err := EditCreate([]byte(`{"Image":"busybox","Env":["A=1","http_proxy="]}`), AddEnv(vars))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Env []string }
	json.Unmarshal(out, &got)
	want := []string{"A=1", "http_proxy=", "NO_PROXY=localhost", "no_proxy=localhost"}
	if !slices.Equal(got.Env, want) {
		t.Fatalf("Env %v, want %v", got.Env, want)
	}
	out, err = EditCreate([]byte(`{"Image":"busybox","Env":null}`), AddEnv(vars))
	if err != nil || !strings.Contains(string(out), `"HTTP_PROXY=http://100.64.249.2:3128","http_proxy=http://100.64.249.2:3128"`) {
		t.Fatalf("no Env: %s %v", out, err)
	}
	same := `{"Image":"busybox"}`
	if out, _ := EditCreate([]byte(same), AddEnv(func() map[string]string { return nil })); string(out) != same {
		t.Fatalf("no proxy set: %s", out)
	}
	if _, err := EditCreate([]byte(`{"Env":"x"}`), AddEnv(vars)); err == nil {
		t.Fatal("an Env that is not a list was taken")
	}
}

// A build gets the build arguments it does not give itself; what it gives
// (in either case) is kept; the request stays a valid head.
func TestBuildArgsAdded(t *testing.T) {
	raw := "POST /v1.41/build?buildargs=%7B%22https_proxy%22%3A%22mine%22%7D&t=app&version=2 HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
	h, err := parseHead([]byte(raw), true)
	if err != nil {
		t.Fatal(err)
	}
	edited, err := h.withBuildArgs(map[string]string{"HTTP_PROXY": "http://p:1", "HTTPS_PROXY": "http://p:2"})
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(edited.raw), "\r\n")
	target := strings.Split(first, " ")[1]
	u, err := url.ParseRequestURI(target)
	if err != nil || u.Path != "/v1.41/build" || u.Query().Get("t") != "app" || u.Query().Get("version") != "2" {
		t.Fatalf("edited target %q: %v", target, err)
	}
	var args map[string]string
	if err := json.Unmarshal([]byte(u.Query().Get("buildargs")), &args); err != nil {
		t.Fatal(err)
	}
	if args["HTTP_PROXY"] != "http://p:1" || args["http_proxy"] != "http://p:1" || args["https_proxy"] != "mine" || len(args) != 3 {
		t.Fatalf("buildargs %v", args)
	}
	if edited.contentLength != 0 || edited.method != "POST" || !strings.HasSuffix(string(edited.raw), "Content-Length: 0\r\n\r\n") {
		t.Fatalf("edited head %q", edited.raw)
	}
	if _, err := h.withBuildArgs(nil); err != nil {
		t.Fatal(err)
	}
	bad, _ := parseHead([]byte("POST /build?buildargs=nope HTTP/1.1\r\nHost: d\r\n\r\n"), true)
	if _, err := bad.withBuildArgs(map[string]string{"HTTP_PROXY": "x"}); err == nil {
		t.Fatal("buildargs that is not JSON was taken")
	}
}

package dockerproxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
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
	out, err := RewriteCreate([]byte(body), HostAtTop, windows("c"), "")
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
	if out, err := RewriteCreate([]byte(same), HostAtTop, windows("c"), "io.test"); err != nil || string(out) != same {
		t.Errorf("a body with nothing to rewrite changed: %s %v", out, err)
	}
	if _, err := RewriteCreate([]byte(`{"HostConfig":{"Binds":["E:\\x:/x"]}}`), HostAtTop, windows("c"), ""); err == nil || !strings.Contains(err.Error(), "drive E:") {
		t.Errorf("unmounted drive: %v", err)
	}
	for _, bad := range []string{`[]`, `{"HostConfig":[]}`, `{"HostConfig":{"Binds":"x"}}`, `{"HostConfig":{"Mounts":[{"Type":"bind","Source":1}]}}`, `{`} {
		if _, err := RewriteCreate([]byte(bad), HostAtTop, windows("c"), ""); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// FuzzRewriteCreate checks a rewrite against dockerd's reading of the
// body (encoding/json into structs, keys in any case): the sources the
// rewrite was asked about are the ones dockerd reads from the body, and
// none it reads from what the proxy sends on is left to rewrite. Seeds
// with keys in other cases are in testdata/fuzz/FuzzRewriteCreate.
func FuzzRewriteCreate(f *testing.F) {
	f.Add([]byte(`{"HostConfig":{"Binds":["C:\\x:/x:ro","v:/v"],"Mounts":[{"Type":"bind","Source":"/c/y"}]}}`))
	f.Add([]byte(`{"HostConfig":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		translate := windows("c")
		var seen []string
		record := func(src string, kind SourceKind) (string, bool, error) {
			seen = append(seen, src)
			return translate(src, kind)
		}
		out, err := RewriteCreate(body, HostAtTop, record, "io.test")
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("rewrote %q into invalid JSON %q", body, out)
		}
		var in, sent dockerdView
		if json.Unmarshal(body, &in) != nil {
			return // dockerd refuses it as well
		}
		if !slices.Equal(seen, in.sources()) {
			t.Fatalf("the rewrite of %q read the sources %q, dockerd reads %q", body, seen, in.sources())
		}
		if err := json.Unmarshal(out, &sent); err != nil {
			t.Fatalf("dockerd would refuse %q, the rewrite of %q: %v", out, body, err)
		}
		for _, src := range sent.sources() {
			if _, ok, err := translate(src, FromBinds); ok || err != nil {
				t.Fatalf("%q reaches dockerd as sent, in %q (the rewrite of %q)", src, out, body)
			}
		}
	})
}

// dockerdView is as much of a create request as the edits touch, read as
// dockerd reads it: encoding/json into structs of the same field types,
// which takes a key for a field whatever its case.
type dockerdView struct {
	Env        []string
	Labels     map[string]string
	HostConfig *HostView
	// dockerd 20.10 (runconfig.ContainerConfigWrapper) also reads the
	// host's fields at the top level, and takes them when HostConfig is
	// absent or null.
	*HostView
}

// HostView is as much of a HostConfig as the edits touch.
type HostView struct {
	Binds       []string
	Mounts      []struct{ Type, Source, Target string }
	ExtraHosts  []string
	Dns         []string
	NetworkMode string
}

// host is the HostConfig dockerd uses.
func (v dockerdView) host() *HostView {
	if v.HostConfig != nil {
		return v.HostConfig
	}
	return v.HostView
}

// sources lists the bind sources dockerd takes from v, in the order
// RewriteBinds meets them.
func (v dockerdView) sources() []string {
	var srcs []string
	h := v.host()
	if h == nil {
		return nil
	}
	for _, b := range h.Binds {
		src, _ := splitBind(b)
		srcs = append(srcs, src)
	}
	for _, m := range h.Mounts {
		if m.Type == "bind" {
			srcs = append(srcs, m.Source)
		}
	}
	return srcs
}

// everyEdit is the edits a ddinit proxy makes, in its order, with a
// translator that records the sources it is asked about in seen.
func everyEdit(seen *[]string) []CreateEdit {
	translate := windows("c")
	record := func(src string, kind SourceKind) (string, bool, error) {
		*seen = append(*seen, src)
		return translate(src, kind)
	}
	vars := func() map[string]string {
		return map[string]string{"HTTP_PROXY": "http://100.64.249.2:3128", "NO_PROXY": "localhost"}
	}
	names := func() map[string]string {
		return map[string]string{"host.docker.internal": "172.20.0.1", "gateway.docker.internal": "100.64.249.1"}
	}
	return []CreateEdit{RewriteBinds(record), LabelRewritten("io.test"), AddEnv(vars), AddHosts(names, (*Create).SetsDNS)}
}

// A key dockerd takes for a field the edits read, in whatever case (and
// with a long s or a Kelvin sign, which encoding/json folds to s and k),
// is edited as the field's own name is; keys the edits do not read are
// passed on as sent.
func TestCreateKeysReadAsDockerdReadsThem(t *testing.T) {
	for _, tc := range []struct {
		name, body, canonical string
		kept                  []string // in the edited body as sent
	}{
		{"hostConfig and binds",
			`{"image":"x","hostConfig":{"binds":["C:\\src:/src:ro"],"memory":5}}`,
			`{"image":"x","HostConfig":{"Binds":["C:\\src:/src:ro"],"memory":5}}`,
			[]string{`"image":"x"`, `"memory":5`}},
		{"binds at the top level, no HostConfig (dockerd 20.10 takes them)",
			`{"Image":"x","binds":["C:\\src:/src"],"Mounts":[{"Type":"bind","Source":"C:\\m","Target":"/m"}]}`,
			`{"Image":"x","Binds":["C:\\src:/src"],"Mounts":[{"Type":"bind","Source":"C:\\m","Target":"/m"}]}`, nil},
		{"binds at the top level, HostConfig null",
			`{"Image":"x","Binds":["C:\\src:/src"],"HostConfig":null}`,
			`{"Image":"x","Binds":["C:\\src:/src"]}`, nil},
		{"binds at the top level beside a HostConfig (dockerd ignores them)",
			`{"Image":"x","Binds":["C:\\top:/top"],"HostConfig":{"Binds":["C:\\src:/src"]}}`,
			`{"Image":"x","Binds":["C:\\top:/top"],"HostConfig":{"Binds":["C:\\src:/src"]}}`, []string{`"Binds":["C:\\top:/top"]`}},
		{"HOSTCONFIG",
			`{"HOSTCONFIG":{"Binds":["/c/src:/src"]}}`,
			`{"HostConfig":{"Binds":["/c/src:/src"]}}`, nil},
		{"mounts with type and source",
			`{"HostConfig":{"mounts":[{"type":"bind","source":"C:\\src","target":"/src","readOnly":true},{"type":"volume","source":"v","target":"/v"}]}}`,
			`{"HostConfig":{"Mounts":[{"Type":"bind","Source":"C:\\src","Target":"/src"},{"Type":"volume","Source":"v","Target":"/v"}]}}`,
			[]string{`"target":"/src"`, `"readOnly":true`}},
		{"long s",
			`{"Hoſtconfig":{"bindſ":["C:\\src:/src"],"Mountſ":[{"TYPE":"bind","ſource":"C:\\f","Target":"/f"}]}}`,
			`{"HostConfig":{"Binds":["C:\\src:/src"],"Mounts":[{"Type":"bind","Source":"C:\\f","Target":"/f"}]}}`, nil},
		{"Kelvin sign",
			`{"HostConfig":{"Dns":["10.0.0.53"],"Networ\u212aMode":"container:web"}}`,
			`{"HostConfig":{"Dns":["10.0.0.53"],"NetworkMode":"container:web"}}`, nil},
		{"dns and extraHosts",
			`{"HostConfig":{"dns":["10.0.0.53"],"extraHosts":["HOST.docker.internal:10.9.9.9"]}}`,
			`{"HostConfig":{"Dns":["10.0.0.53"],"ExtraHosts":["HOST.docker.internal:10.9.9.9"]}}`, nil},
		{"env and labels",
			`{"env":["http_proxy=mine"],"labels":{"keep":"me"},"HostConfig":{"Binds":["/c/x:/x"]}}`,
			`{"Env":["http_proxy=mine"],"Labels":{"keep":"me"},"HostConfig":{"Binds":["/c/x:/x"]}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []string
			out, err := EditCreate([]byte(tc.body), HostAtTop, everyEdit(&seen)...)
			if err != nil {
				t.Fatal(err)
			}
			// encoding/json itself says which keys are the fields: the
			// rewrite is asked about the sources dockerd would bind.
			var in dockerdView
			if err := json.Unmarshal([]byte(tc.body), &in); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seen, in.sources()) {
				t.Errorf("the rewrite read the sources %q, dockerd reads %q", seen, in.sources())
			}
			want, err := EditCreate([]byte(tc.canonical), HostAtTop, everyEdit(new([]string))...)
			if err != nil {
				t.Fatal(err)
			}
			var gotView, wantView dockerdView
			if json.Unmarshal(out, &gotView) != nil || json.Unmarshal(want, &wantView) != nil || !reflect.DeepEqual(gotView, wantView) {
				t.Errorf("dockerd would read\n%s\nnot as\n%s", out, want)
			}
			for _, k := range tc.kept {
				if !strings.Contains(string(out), k) {
					t.Errorf("%s is not kept as sent: %s", k, out)
				}
			}
		})
	}
}

// Two keys for one field are refused with a 400 naming them, as dockerd
// would decode both into that field, merging or replacing.
func TestCreateFieldGivenTwiceRefused(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"HostConfig":{"Binds":["C:\\src:/src"]},"hostconfig":{"Memory":1}}`, `HostConfig given twice (as "HostConfig" and "hostconfig")`},
		{`{"HostConfig":{"Binds":["C:\\src:/src"]},"HostConfig":{"Memory":1}}`, `HostConfig given twice (as "HostConfig" and "HostConfig")`},
		{`{"HostConfig":{"Binds":["/safe:/x"],"binds":["C:\\src:/src"]}}`, `HostConfig.Binds given twice (as "Binds" and "binds")`},
		{`{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/safe"},{"Type":"bind","Source":"/safe","ſource":"C:\\src"}]}}`, `HostConfig.Mounts[1].Source given twice (as "Source" and "\u017fource")`},
		{`{"HostConfig":{"Dns":["1.1.1.1"],"NetworkMode":"host","Networ\u212aMode":"container:web"}}`, `HostConfig.NetworkMode given twice (as "NetworkMode" and "Networ\u212aMode")`},
		{`{"Env":[],"ENV":["A=1"]}`, `Env given twice (as "Env" and "ENV")`},
		{`{"Labels":{},"labels":{"a":"b"},"HostConfig":{"Binds":["C:\\x:/x"]}}`, `Labels given twice (as "Labels" and "labels")`},
	} {
		if _, err := EditCreate([]byte(tc.body), HostAtTop, everyEdit(new([]string))...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s", tc.body, err, tc.want)
		}
	}
	// A field given twice that no edit reads passes as sent: dockerd
	// reads it as it would without the proxy.
	for _, body := range []string{
		`{"HostConfig":{"NetworkMode":"host","Networ\u212aMode":"container:web"}}`,
		`{"Labels":{},"labels":{"a":"b"},"HostConfig":{}}`,
	} {
		out, err := EditCreate([]byte(body), HostAtTop, everyEdit(new([]string))...)
		if err != nil {
			t.Errorf("%s: %v", body, err)
			continue
		}
		checkOnlyEdited(t, []byte(body), out)
	}
	// The client gets it as any refused create: a 400 with dockerd's JSON.
	body := `{"Image":"x","HostConfig":{"Binds":["C:\\src:/src"]},"hostconfig":{}}`
	c := dialUnix(t, proxyFor(t, engine(t), nil))
	fmt.Fprintf(c, "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct{ Message string }
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || resp.StatusCode != 400 || !strings.HasPrefix(answer.Message, `HostConfig given twice`) {
		t.Fatalf("%d %+v %v", resp.StatusCode, answer, err)
	}
}

// Every field an edit reads or writes is in the list decodeStruct renames
// by: an edit reading a field of any other name would read it only when
// sent in that case.
func TestEditsReadListedFields(t *testing.T) {
	src, err := os.ReadFile("create.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		re     string
		fields []string
	}{
		{`c\.top\["(\w+)"\]`, createFields},
		{`c\.host\["(\w+)"\]`, hostFields},
		{`\bm\["(\w+)"\]`, mountFields},
	} {
		for _, m := range regexp.MustCompile(l.re).FindAllStringSubmatch(string(src), -1) {
			if !slices.Contains(l.fields, m[1]) {
				t.Errorf("create.go reads %s, which is not in %q", m[0], l.fields)
			}
		}
	}
}

func TestRewriteCreateLabelsWhatItRewrote(t *testing.T) {
	body := `{"Image":"x","Labels":{"keep":"me"},"HostConfig":{"Binds":["/c/src:/src"]}}`
	out, err := RewriteCreate([]byte(body), HostAtTop, windows("c"), "io.ddinit.binds")
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
	once, err := RewriteCreate(body, HostAtTop, distro, "io.ddinit.proxy.binds")
	if err != nil {
		t.Fatal(err)
	}
	twice, err := RewriteCreate(once, HostAtTop, windows, "io.ddinit.proxy.binds")
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
	out, err := EditCreate([]byte(plain), HostAtTop, edit)
	if err != nil || string(out) != plain {
		t.Fatalf("a create without DNS changed: %s %v", out, err)
	}
	withDNS := `{"Image":"busybox","HostConfig":{"Dns":["10.0.0.53"],"ExtraHosts":["HOST.docker.internal:10.9.9.9","db:10.1.1.1"]}}`
	out, err = EditCreate([]byte(withDNS), HostAtTop, edit)
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
	out, err = EditCreate([]byte(`{"Image":"busybox"}`), HostAtTop, AddHosts(names, func(*Create) (bool, error) { return true, nil }))
	if err != nil || !strings.Contains(string(out), `"ExtraHosts":["gateway.docker.internal:100.64.249.1","host.docker.internal:172.20.0.1"]`) {
		t.Fatalf("no HostConfig: %s %v", out, err)
	}
	// A container on another's network gets none: dockerd refuses them.
	shared := `{"Image":"busybox","HostConfig":{"Dns":["10.0.0.53"],"NetworkMode":"container:web"}}`
	if out, err := EditCreate([]byte(shared), HostAtTop, edit); err != nil || string(out) != shared {
		t.Fatalf("on another container's network: %s %v", out, err)
	}
	if _, err := EditCreate([]byte(`{"HostConfig":{"Dns":["1.1.1.1"],"ExtraHosts":"x"}}`), HostAtTop, edit); err == nil {
		t.Fatal("ExtraHosts that is not a list was taken")
	}
}

// Proxy variables go into a new container's environment in both cases,
// unless it sets them itself in either case (empty: the user's opt-out).
func TestAddEnvUnlessTheRequestSetsIt(t *testing.T) {
	vars := func() map[string]string {
		return map[string]string{"HTTP_PROXY": "http://100.64.249.2:3128", "NO_PROXY": "localhost"}
	}
	out, err := EditCreate([]byte(`{"Image":"busybox","Env":["A=1","http_proxy="]}`), HostAtTop, AddEnv(vars))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Env []string }
	json.Unmarshal(out, &got)
	want := []string{"A=1", "http_proxy=", "NO_PROXY=localhost", "no_proxy=localhost"}
	if !slices.Equal(got.Env, want) {
		t.Fatalf("Env %v, want %v", got.Env, want)
	}
	out, err = EditCreate([]byte(`{"Image":"busybox","Env":null}`), HostAtTop, AddEnv(vars))
	if err != nil || !strings.Contains(string(out), `"HTTP_PROXY=http://100.64.249.2:3128","http_proxy=http://100.64.249.2:3128"`) {
		t.Fatalf("no Env: %s %v", out, err)
	}
	same := `{"Image":"busybox"}`
	if out, _ := EditCreate([]byte(same), HostAtTop, AddEnv(func() map[string]string { return nil })); string(out) != same {
		t.Fatalf("no proxy set: %s", out)
	}
	if _, err := EditCreate([]byte(`{"Env":"x"}`), HostAtTop, AddEnv(vars)); err == nil {
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
	// Only buildargs changed, and in it only what was added: the other
	// parameters as sent, in their order.
	if !strings.HasPrefix(target, "/v1.41/build?buildargs=") || !strings.HasSuffix(target, "&t=app&version=2") ||
		!strings.HasPrefix(u.Query().Get("buildargs"), `{"https_proxy":"mine",`) {
		t.Fatalf("edited target %q", target)
	}
	// A build without buildargs gets them; one with a second buildargs
	// (which dockerd does not read) keeps it as sent.
	for raw, want := range map[string]string{
		"POST /build?t=x HTTP/1.1\r\nHost: d\r\n\r\n":                           "/build?t=x&buildargs=",
		"POST /build HTTP/1.1\r\nHost: d\r\n\r\n":                               "/build?buildargs=",
		"POST /build?buildargs=%7B%7D&buildargs=zz HTTP/1.1\r\nHost: d\r\n\r\n": "&buildargs=zz ",
	} {
		h, _ := parseHead([]byte(raw), true)
		e, err := h.withBuildArgs(map[string]string{"HTTP_PROXY": "http://p:1"})
		if err != nil || !strings.Contains(string(e.raw), want) {
			t.Errorf("%q: %q %v", raw, e.raw, err)
		}
	}
	if _, err := h.withBuildArgs(nil); err != nil {
		t.Fatal(err)
	}
	bad, _ := parseHead([]byte("POST /build?buildargs=nope HTTP/1.1\r\nHost: d\r\n\r\n"), true)
	if _, err := bad.withBuildArgs(map[string]string{"HTTP_PROXY": "x"}); err == nil {
		t.Fatal("buildargs that is not JSON was taken")
	}
}

// A body that gives the host's settings at the top level, without a
// HostConfig, is edited there: a HostConfig the edits added would be all
// dockerd 20.10 reads, and the top level's binds would be lost.
func TestHostFieldsAtTheTopLevelStayThere(t *testing.T) {
	body := `{"Image":"x","Binds":["C:\\src:/src"],"Privileged":true,"Dns":["10.0.0.53"]}`
	var seen []string
	out, err := EditCreate([]byte(body), HostAtTop, everyEdit(&seen)...)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	var view dockerdView
	json.Unmarshal(out, &view)
	if _, ok := got["HostConfig"]; ok || view.host() == nil || string(got["Privileged"]) != "true" ||
		!slices.Equal(view.host().Binds, []string{"/run/desktop/mnt/host/c/src:/src"}) || len(view.host().ExtraHosts) != 2 {
		t.Fatalf("edited into %s; want the binds rewritten and the hosts added at the top level, no HostConfig", out)
	}
}

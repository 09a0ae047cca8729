package kubeconfig

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// offered is a kubeconfig as ddinit run offers it: the cluster's admin
// credentials, inline.
func offered(cert string) []byte {
	return []byte(`{"apiVersion":"v1","kind":"Config",
"clusters":[{"name":"docker-desktop","cluster":{"server":"https://127.0.0.1:6443","certificate-authority-data":"Q0EK"}}],
"users":[{"name":"docker-desktop","user":{"client-certificate-data":"` + cert + `","client-key-data":"S0VZCg=="}}],
"contexts":[{"name":"docker-desktop","context":{"cluster":"docker-desktop","user":"docker-desktop"}}],
"current-context":"docker-desktop"}`)
}

func testOffer(t testing.TB, cert string) Offer {
	t.Helper()
	o, err := ParseOffer(offered(cert))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// decoded is what a kubeconfig means: its content as kubectl reads it.
func decoded(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var v any
	if err := decodeValue(b, &v); err != nil {
		t.Fatalf("%v in:\n%s", err, b)
	}
	m, _ := v.(map[string]any)
	return m
}

// entry is the entry named name in list key ("clusters", …), and how
// many there are.
func entry(m map[string]any, key, name string) (map[string]any, int) {
	var found map[string]any
	n := 0
	items, _ := m[key].([]any)
	for _, it := range items {
		if e, ok := it.(map[string]any); ok && e["name"] == name {
			if found == nil {
				found = e
			}
			n++
		}
	}
	return found, n
}

// others is m without the entries named docker-desktop and without
// current-context, lists left empty dropped: what a merge or a removal
// must leave as it was.
func others(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if k == CurrentContext {
			continue
		}
		if items, ok := v.([]any); ok && (k == "clusters" || k == "users" || k == "contexts") {
			var kept []any
			for _, it := range items {
				if !named(it) {
					kept = append(kept, it)
				}
			}
			if len(kept) == 0 {
				continue
			}
			v = kept
		}
		if v == nil && (k == "clusters" || k == "users" || k == "contexts") {
			continue
		}
		out[k] = v
	}
	return out
}

// ours checks m holds the offer's cluster, user and context once each,
// marked as ddinit's.
func ours(t testing.TB, m map[string]any, o Offer) {
	t.Helper()
	for _, l := range lists {
		e, n := entry(m, l.key, Name)
		if n != 1 || !marked(l.field, e) {
			t.Fatalf("%s: %d named %s, marked %v: %v", l.key, n, Name, marked(l.field, e), m[l.key])
		}
	}
	c, _ := entry(m, "clusters", Name)
	u, _ := entry(m, "users", Name)
	ctx, _ := entry(m, "contexts", Name)
	cl, _ := c["cluster"].(map[string]any)
	us, _ := u["user"].(map[string]any)
	cx, _ := ctx["context"].(map[string]any)
	if cl["server"] != o.Cluster["server"] || cl["certificate-authority-data"] != o.Cluster["certificate-authority-data"] ||
		us["client-certificate-data"] != o.User["client-certificate-data"] || us["client-key-data"] != o.User["client-key-data"] ||
		cx["cluster"] != Name || cx["user"] != Name {
		t.Fatalf("not the offer's: %v %v %v", cl, us, cx)
	}
}

func sameMeaning(t testing.TB, a, b any) bool {
	t.Helper()
	ca, err1 := canonical(a)
	cb, err2 := canonical(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return bytes.Equal(ca, cb)
}

// A user without a kubeconfig (or with an empty one) gets one holding
// the docker-desktop context, current.
func TestMergeIntoNothing(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	for _, doc := range []string{"", "\n", "# nothing yet\n", "null\n", "---\n"} {
		out, changed, err := Merge([]byte(doc), o)
		if err != nil || !changed {
			t.Fatalf("%q: changed %v, %v", doc, changed, err)
		}
		m := decoded(t, out)
		ours(t, m, o)
		if m[CurrentContext] != Name || m["apiVersion"] != "v1" || m["kind"] != "Config" {
			t.Fatalf("%q: %s", doc, out)
		}
	}
}

// A kubeconfig with clusters, users and contexts of its own, preferences,
// extensions and keys kubectl does not know keeps all of them, with the
// same meaning, and its comments; only ours are added.
func TestMergeKeepsEverythingElse(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	doc := []byte(`# work clusters: do not edit by hand
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://prod.example.com:443 # the VPN's
    certificate-authority: /etc/prod-ca.pem
    extensions:
    - name: client.authentication.k8s.io/exec
      extension: {audience: prod, when: 2024-01-01}
  name: prod
- name: kind-dev
  cluster: {server: "https://127.0.0.1:40123", insecure-skip-tls-verify: true}
users:
- name: prod-admin
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: aws
      args: [eks, get-token, --cluster-name, prod]
      env: null
- name: kind-dev
  user: {token: "0123"}
contexts:
- context: {cluster: prod, user: prod-admin, namespace: shop}
  name: prod
- context: {cluster: kind-dev, user: kind-dev}
  name: kind-dev
current-context: prod
preferences:
  colors: true
  extensions: [{name: x, extension: {a: 1}}]
x-unknown:
  numbers: [1, 2.50, 0x1F, 1e3, .inf, -.nan]
  quoted: ["true", "1", "", "~"]
  multi: |
    line one
    line two
  anchors: &a {k: v}
  again: *a
`)
	out, changed, err := Merge(doc, o)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	before, after := decoded(t, doc), decoded(t, out)
	if !sameMeaning(t, others(before), others(after)) {
		t.Fatalf("something else changed:\n%s", out)
	}
	ours(t, after, o)
	if after[CurrentContext] != "prod" {
		t.Fatalf("current-context: %v", after[CurrentContext])
	}
	for _, comment := range []string{"# work clusters: do not edit by hand", "# the VPN's"} {
		if !bytes.Contains(out, []byte(comment)) {
			t.Errorf("comment %q lost:\n%s", comment, out)
		}
	}
	// The other entries keep their order, ours come last.
	if i, j := bytes.Index(out, []byte("name: prod\n")), bytes.Index(out, []byte("name: kind-dev\n")); i < 0 || j < i {
		t.Errorf("order changed:\n%s", out)
	}
}

// current-context is set only when the file names none.
func TestCurrentContextRules(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	for doc, want := range map[string]any{
		"apiVersion: v1\n":                            Name,
		"current-context: \"\"\n":                     Name,
		"current-context:\n":                          Name,
		"current-context: prod\n":                     "prod",
		"current-context: docker-desktop\n":           Name,
		"current-context: minikube # mine\nusers: []": "minikube",
		`{"current-context": "kind-dev"}`:             "kind-dev",
		"current-context: 5\n":                        5, // not ddinit's to mend
	} {
		out, _, err := Merge([]byte(doc), o)
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if got := decoded(t, out)[CurrentContext]; got != want {
			t.Errorf("%q: current-context %v, want %v", doc, got, want)
		}
	}
}

// A file that does not parse, or that is not a kubeconfig ddinit can
// edit safely, is left as it is, with an error saying why.
func TestUnparseableFilesAreLeftAlone(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	for name, doc := range map[string]string{
		"unclosed flow":        "clusters: [\n",
		"tab indentation":      "clusters:\n\t- name: x\n",
		"a list":               "- name: prod\n",
		"a string":             "hello\n",
		"two documents":        "apiVersion: v1\n---\napiVersion: v1\n",
		"duplicate keys":       "users: []\nusers: []\n",
		"clusters not a list":  "clusters: 5\n",
		"contexts a mapping":   "contexts: {docker-desktop: {}}\n",
		"list from an alias":   "base: &b []\nclusters: *b\n",
		"merge key":            "base: &b {clusters: []}\n<<: *b\n",
		"ours anchored":        "clusters:\n- &dd {name: docker-desktop, cluster: {server: x}}\nbackup: *dd\n",
		"not UTF-8":            "clusters: \"\xff\xfe\"\n",
		"non-string keys":      "1: one\n",
		"invalid JSON-ish":     `{"clusters": [}`,
		"JSON with duplicates": `{"users": [], "users": []}`,
	} {
		out, changed, err := Merge([]byte(doc), o)
		if err == nil || !errors.Is(err, ErrNotEditable) || changed || string(out) != doc {
			t.Errorf("%s: changed %v, err %v, out %q", name, changed, err, out)
		}
		t.Logf("%s: %v", name, err)
	}
	if _, _, err := Merge([]byte("clusters: [\n"), o); !strings.Contains(err.Error(), "does not parse") {
		t.Errorf("the error does not say the file does not parse: %v", err)
	}
}

// Merged again with the same offer, a file is unchanged (the same
// bytes); with new credentials (the cluster was reset), only ours change
// and the namespace the user set in our context stays.
func TestMergeAgain(t *testing.T) {
	o1, o2 := testOffer(t, "T05FCg=="), testOffer(t, "VFdPCg==")
	doc := []byte("apiVersion: v1\nclusters:\n- name: prod\n  cluster: {server: https://prod:443}\ncurrent-context: prod\n")
	out1, _, err := Merge(doc, o1)
	if err != nil {
		t.Fatal(err)
	}
	again, changed, err := Merge(out1, o1)
	if err != nil || changed || !bytes.Equal(again, out1) {
		t.Fatalf("the same offer again: changed %v, %v\n%s\n%s", changed, err, out1, again)
	}
	// The user sets a namespace on the context, as kubectl config
	// set-context --current --namespace does.
	edited := bytes.Replace(out1, []byte("      cluster: docker-desktop\n"), []byte("      cluster: docker-desktop\n      namespace: shop\n"), 1)
	if !bytes.Contains(edited, []byte("namespace: shop")) {
		t.Fatalf("no context to edit in:\n%s", out1)
	}
	out2, changed, err := Merge(edited, o2)
	if err != nil || !changed {
		t.Fatalf("new credentials: changed %v, %v", changed, err)
	}
	m := decoded(t, out2)
	ours(t, m, o2)
	if !sameMeaning(t, others(decoded(t, doc)), others(m)) || m[CurrentContext] != "prod" {
		t.Fatalf("something else changed:\n%s", out2)
	}
	ctx, _ := entry(m, "contexts", Name)
	if ctx["context"].(map[string]any)["namespace"] != "shop" {
		t.Fatalf("the user's namespace was lost:\n%s", out2)
	}
}

// A docker-desktop context written by someone else (Docker Desktop on
// Windows, through a kubeconfig linked to Windows') is brought up to the
// offer; duplicates of it go.
func TestMergeReplacesAnotherDockerDesktop(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	doc := []byte(`clusters:
- name: docker-desktop
  cluster: {server: "https://kubernetes.docker.internal:6443", certificate-authority-data: OLD}
- name: docker-desktop
  cluster: {server: "https://elsewhere:6443"}
users:
- name: docker-desktop
  user: {client-certificate-data: OLD, client-key-data: OLD}
contexts:
- name: docker-desktop
  context: {cluster: docker-desktop, user: docker-desktop}
current-context: docker-desktop
`)
	out, _, err := Merge(doc, o)
	if err != nil {
		t.Fatal(err)
	}
	ours(t, decoded(t, out), o)
}

// Remove takes out exactly what ddinit merged: the entries named
// docker-desktop carrying its mark; current-context becomes "" when it
// named ours; everything else stays. A file without ours is unchanged.
func TestRemoveTakesOutExactlyOurs(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	doc := []byte("# mine\nclusters:\n- name: prod\n  cluster: {server: https://prod:443}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\nusers:\n- name: me\n  user: {token: t}\npreferences: {colors: true}\n")
	for _, cc := range []string{"", "current-context: prod\n"} {
		merged, _, err := Merge(append(append([]byte{}, doc...), cc...), o)
		if err != nil {
			t.Fatal(err)
		}
		out, changed, err := Remove(merged)
		if err != nil || !changed {
			t.Fatalf("changed %v, %v", changed, err)
		}
		m := decoded(t, out)
		if !sameMeaning(t, others(decoded(t, doc)), others(m)) {
			t.Fatalf("something else changed:\n%s", out)
		}
		for _, l := range lists {
			if _, n := entry(m, l.key, Name); n != 0 {
				t.Fatalf("%s still has ours:\n%s", l.key, out)
			}
		}
		want := "prod"
		if cc == "" {
			want = "" // it named ours
		}
		if m[CurrentContext] != want {
			t.Fatalf("current-context %v, want %q", m[CurrentContext], want)
		}
		if !bytes.Contains(out, []byte("# mine")) {
			t.Fatalf("comment lost:\n%s", out)
		}
		// Nothing of ours left: removed again, the same bytes.
		if again, changed, err := Remove(out); err != nil || changed || !bytes.Equal(again, out) {
			t.Fatalf("again: changed %v, %v", changed, err)
		}
	}
	// A docker-desktop context ddinit did not merge (no mark) stays,
	// current and all.
	theirs := []byte("clusters:\n- name: docker-desktop\n  cluster: {server: https://127.0.0.1:6443}\ncontexts:\n- name: docker-desktop\n  context: {cluster: docker-desktop, user: docker-desktop}\ncurrent-context: docker-desktop\n")
	if out, changed, err := Remove(theirs); err != nil || changed || !bytes.Equal(out, theirs) {
		t.Fatalf("someone else's docker-desktop: changed %v, %v\n%s", changed, err, out)
	}
	// Nothing to remove from nothing; an unparseable file is left alone.
	if out, changed, err := Remove(nil); err != nil || changed || out != nil {
		t.Fatalf("nothing: %q %v %v", out, changed, err)
	}
	if out, changed, err := Remove([]byte("clusters: [")); !errors.Is(err, ErrNotEditable) || changed || string(out) != "clusters: [" {
		t.Fatalf("unparseable: %q %v %v", out, changed, err)
	}
}

// A JSON kubeconfig (kubectl reads those too: tabs, escaped slashes and
// all) is merged and written back as YAML, as kubectl does when it edits
// one, meaning the same.
func TestMergeIntoJSON(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	doc := []byte("{\n\t\"apiVersion\": \"v1\",\n\t\"clusters\": [{\"name\": \"a\\/b\", \"cluster\": {\"server\": \"https://x:1\"}}],\n\t\"x\": {\"emoji\": \"\\ud83d\\ude00\", \"n\": 1.0e3, \"t\": true, \"z\": null, \"s\": \"true\"},\n\t\"current-context\": \"a/b\"\n}\n")
	out, changed, err := Merge(doc, o)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	before, after := decoded(t, doc), decoded(t, out)
	if !sameMeaning(t, others(before), others(after)) || after[CurrentContext] != "a/b" {
		t.Fatalf("something else changed:\n%s", out)
	}
	ours(t, after, o)
	if bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
		t.Fatalf("not written as YAML:\n%s", out)
	}
}

// Only an https server on the loopback and inline credentials are taken
// from the offer (every distro's root can write where it is): never a
// program for kubectl to run, a file, a proxy or an insecure flag.
func TestParseOfferTakesOnlyWhatIsSafe(t *testing.T) {
	o, err := ParseOffer([]byte(`
clusters:
- name: docker-desktop
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: Q0EK
    insecure-skip-tls-verify: true
    proxy-url: http://evil:3128
users:
- name: docker-desktop
  user:
    token: abc
    exec: {command: /tmp/evil}
    auth-provider: {name: oidc}
contexts:
- name: docker-desktop
  context: {cluster: docker-desktop, user: docker-desktop, namespace: kube-system}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Cluster) != 2 || len(o.User) != 1 || o.User["token"] != "abc" || o.Digest == "" {
		t.Fatalf("taken: %+v", o)
	}
	good := string(offered("Q0VSVAo="))
	for name, doc := range map[string]string{
		"a server elsewhere":   strings.Replace(good, "127.0.0.1:6443", "evil.example.com:6443", 1),
		"plain http":           strings.Replace(good, "https://127.0.0.1", "http://127.0.0.1", 1),
		"credentials in a URL": strings.Replace(good, "https://127.0.0.1", "https://u:p@127.0.0.1", 1),
		"no CA":                strings.Replace(good, `"certificate-authority-data":"Q0EK"`, `"certificate-authority":"/ca.pem"`, 1),
		"a key without a cert": strings.Replace(good, `"client-certificate-data":"Q0VSVAo=",`, "", 1),
		"only an exec":         strings.Replace(good, `"client-certificate-data":"Q0VSVAo=","client-key-data":"S0VZCg=="`, `"exec":{"command":"/tmp/evil"}`, 1),
		"another context":      strings.Replace(good, `"context":{"cluster":"docker-desktop"`, `"context":{"cluster":"prod"`, 1),
		"no user":              strings.Replace(good, `"name":"docker-desktop","user"`, `"name":"other","user"`, 1),
		"not YAML":             "clusters: [",
		"too large":            good + strings.Repeat(" ", MaxOfferBytes),
	} {
		if _, err := ParseOffer([]byte(doc)); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
}

// Merged reports a file holding what ddinit merged.
func TestMerged(t *testing.T) {
	o := testOffer(t, "Q0VSVAo=")
	out, _, _ := Merge(nil, o)
	removed, _, _ := Remove(out)
	if !Merged(out) || Merged(removed) || Merged(nil) || Merged([]byte("clusters: [")) {
		t.Fatal("Merged")
	}
}

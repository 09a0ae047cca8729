package kubeconfig

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzMerge merges the docker-desktop context into any file a user may
// have as ~/.kube/config, and takes it out again: never a panic; a file
// refused is returned as it was; one merged means what it meant before
// but for ours, holds ours once each, keeps a current-context it had;
// merged again it is unchanged; ours removed, the rest is still as it
// was. The corpus (testdata/fuzz/FuzzMerge) holds kubeconfigs as kubectl,
// kind, minikube and hand editing leave them.
func FuzzMerge(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("apiVersion: v1\nclusters: []\ncontexts: []\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: []\n"))
	f.Add([]byte(`{"apiVersion":"v1","clusters":[{"name":"a","cluster":{"server":"https://a"}}],"current-context":"a"}`))
	f.Add([]byte("clusters:\n- name: docker-desktop\n  cluster: {server: x, extensions: [{name: ddinit, extension: {}}]}\n"))
	f.Add([]byte("# c\nx: &a [1, {b: *a}]\n"))
	o := testOffer(f, "Q0VSVAo=")
	f.Fuzz(func(t *testing.T, doc []byte) {
		orig := bytes.Clone(doc)
		out, changed, err := Merge(doc, o)
		if !bytes.Equal(doc, orig) {
			t.Fatal("Merge changed its input")
		}
		if err != nil {
			if !errors.Is(err, ErrNotEditable) || changed || !bytes.Equal(out, doc) {
				t.Fatalf("refused (%v) but changed %v, out %q", err, changed, out)
			}
			return
		}
		if !changed {
			if !bytes.Equal(out, doc) {
				t.Fatal("unchanged but other bytes")
			}
		}
		after := decoded(t, out)
		ours(t, after, o)
		var before map[string]any
		if d, err := parse(doc); err != nil {
			t.Fatalf("merged a file that does not parse: %v", err)
		} else if !d.created {
			before = d.value
			if !sameMeaning(t, others(before), others(after)) {
				t.Fatalf("something else changed:\n%q\n%q", doc, out)
			}
		}
		cc, isString := before[CurrentContext].(string)
		hadOne := before[CurrentContext] != nil && !(isString && cc == "")
		if hadOne && !sameMeaning(t, before[CurrentContext], after[CurrentContext]) || !hadOne && after[CurrentContext] != Name {
			t.Fatalf("current-context %v, was %v", after[CurrentContext], before[CurrentContext])
		}
		again, changed, err := Merge(out, o)
		if err != nil || changed || !bytes.Equal(again, out) {
			t.Fatalf("merged again: changed %v, %v:\n%q\n%q", changed, err, out, again)
		}
		removed, _, err := Remove(out)
		if err != nil {
			t.Fatalf("remove: %v:\n%q", err, out)
		}
		left := decoded(t, removed)
		for _, l := range lists {
			if e, n := entry(left, l.key, Name); n > 0 && marked(l.field, e) {
				t.Fatalf("%s still has ours:\n%q", l.key, removed)
			}
		}
		if before != nil && !sameMeaning(t, others(before), others(left)) {
			t.Fatalf("remove changed something else:\n%q\n%q", out, removed)
		}
	})
}

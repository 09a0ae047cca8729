package kubeconfig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"

	"gopkg.in/yaml.v3"
)

// Name is Docker Desktop's name for its cluster, its user and its
// context: what ddinit merges and takes out again.
const Name = "docker-desktop"

// markName names the extension ddinit puts in each entry it merges, as
// minikube marks its own: Remove takes out only entries that carry it,
// never a docker-desktop context written by someone else (Docker Desktop
// on Windows, through a kubeconfig linked to the Windows one).
const markName = "ddinit"

// mark is that extension, as an entry's extensions list holds it.
func mark() map[string]any {
	return map[string]any{"name": markName, "extension": map[string]any{"provider": "ddinit"}}
}

// Sizes read at most: the offer is a few kilobytes; a user's file with
// many clusters a few hundred.
const (
	MaxOfferBytes  = 64 << 10
	MaxConfigBytes = 4 << 20
)

// ErrNotEditable is a user's kubeconfig ddinit leaves as it is: it does
// not parse, is not a kubeconfig, or an edit of it would not read back
// as exactly what was meant.
var ErrNotEditable = errors.New("left as it is")

// CurrentContext is the key naming the context kubectl uses.
const CurrentContext = "current-context"

// The three lists of a kubeconfig, each entry's name and its field.
var lists = []struct{ key, field string }{{"clusters", "cluster"}, {"users", "user"}, {"contexts", "context"}}

// Offer is what ddinit takes from the offered kubeconfig: the server and
// inline credentials, nothing else.
type Offer struct {
	Cluster map[string]any // server, certificate-authority-data, tls-server-name
	User    map[string]any // client-certificate-data and client-key-data, or token
	// Digest is the offered file's sha256 (hex): a new one (a reset of the
	// cluster changes its credentials) is merged again.
	Digest string
}

// ParseOffer takes the docker-desktop cluster, user and context from the
// offered kubeconfig (JSON or YAML). Every distro's root can write the
// shared tmpfs it comes from, so only what cannot reach beyond the
// cluster on the loopback is taken: an https server on 127.0.0.1, ::1 or
// localhost, and inline certificates or a token. An exec or auth-provider
// entry (a program kubectl would run as the user), a file path, a proxy
// or an insecure flag is never merged.
func ParseOffer(b []byte) (Offer, error) {
	var o Offer
	if len(b) > MaxOfferBytes {
		return o, fmt.Errorf("the offered kubeconfig: %d bytes, more than %d", len(b), MaxOfferBytes)
	}
	var v any
	if err := decodeValue(b, &v); err != nil {
		return o, fmt.Errorf("the offered kubeconfig: %w", err)
	}
	root, ok := v.(map[string]any)
	if !ok {
		return o, errors.New("the offered kubeconfig is not a mapping")
	}
	entry := map[string]map[string]any{}
	for _, l := range lists {
		items, _ := root[l.key].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok && m["name"] == Name {
				entry[l.field], _ = m[l.field].(map[string]any)
				break
			}
		}
		if entry[l.field] == nil {
			return o, fmt.Errorf("the offered kubeconfig has no %s named %s", l.field, Name)
		}
	}
	if ctx := entry["context"]; ctx["cluster"] != Name || ctx["user"] != Name {
		return o, fmt.Errorf("the offered context %s does not name cluster and user %s", Name, Name)
	}
	c, u := entry["cluster"], entry["user"]
	server, _ := c["server"].(string)
	if err := loopbackHTTPS(server); err != nil {
		return o, fmt.Errorf("the offered cluster's server %q: %w", server, err)
	}
	o.Cluster = map[string]any{"server": server}
	if ca, _ := c["certificate-authority-data"].(string); ca != "" {
		o.Cluster["certificate-authority-data"] = ca
	} else {
		return o, errors.New("the offered cluster has no certificate-authority-data")
	}
	if name, ok := c["tls-server-name"].(string); ok && name != "" {
		o.Cluster["tls-server-name"] = name
	}
	o.User = map[string]any{}
	cert, _ := u["client-certificate-data"].(string)
	key, _ := u["client-key-data"].(string)
	token, _ := u["token"].(string)
	if (cert == "") != (key == "") || (cert == "" && token == "") {
		return o, errors.New("the offered user has no inline credentials (client-certificate-data and client-key-data, or token)")
	}
	if cert != "" {
		o.User["client-certificate-data"], o.User["client-key-data"] = cert, key
	}
	if token != "" {
		o.User["token"] = token
	}
	sum := sha256.Sum256(b)
	o.Digest = hex.EncodeToString(sum[:])
	return o, nil
}

// loopbackHTTPS checks the cluster is reached over TLS on this machine.
func loopbackHTTPS(server string) error {
	u, err := url.Parse(server)
	switch {
	case err != nil:
		return err
	case u.Scheme != "https" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return errors.New("not https://HOST:PORT")
	case !slices.Contains([]string{"127.0.0.1", "::1", "localhost"}, u.Hostname()):
		return errors.New("not on the loopback")
	}
	return nil
}

// Merge returns doc (a user's kubeconfig; empty: none yet) with the
// offer's cluster, user and context in it, and whether that changed it.
// Only the entries named docker-desktop change: the cluster and the user
// are replaced whole (they are Docker Desktop's: the offer is their
// truth); the context keeps what the user set in it (a namespace) with
// its cluster and user pointed at docker-desktop; a second entry of that
// name in a list is dropped. current-context is set to docker-desktop
// only when the file names none. Everything else is kept: with doc
// unchanged (the same bytes) when ours are already as offered, else
// rewritten as YAML (a JSON file too, as kubectl does when it edits one)
// with its comments and order. An error (ErrNotEditable) leaves doc as
// it is.
func Merge(doc []byte, o Offer) ([]byte, bool, error) {
	d, err := parse(doc)
	if err != nil {
		return doc, false, err
	}
	want := maps.Clone(d.value)
	changed := d.created
	for _, l := range lists {
		items, seq, err := d.list(l.key)
		if err != nil {
			return doc, false, err
		}
		var kept []any
		var nodes []*yaml.Node
		found, added := false, false
		for i, it := range items {
			switch {
			case !named(it):
				kept, nodes = append(kept, it), append(nodes, seq.Content[i])
			case found: // a second docker-desktop: kubectl would take either
				changed = true
			default:
				found = true
				e := o.entry(l.field, it)
				kept = append(kept, e)
				if same(e, it) {
					nodes = append(nodes, seq.Content[i])
					continue
				}
				n, err := nodeOf(e)
				if err != nil {
					return doc, false, err
				}
				keepComments(n, seq.Content[i])
				nodes, changed, added = append(nodes, n), true, true
			}
		}
		if !found {
			e := o.entry(l.field, nil)
			n, err := nodeOf(e)
			if err != nil {
				return doc, false, err
			}
			kept, nodes, changed, added = append(kept, e), append(nodes, n), true, true
		}
		want[l.key] = kept
		d.setList(l.key, nodes, added)
	}
	if cc, isString := want[CurrentContext].(string); want[CurrentContext] == nil || isString && cc == "" {
		want[CurrentContext] = Name
		d.setString(CurrentContext, Name)
		changed = true
	}
	if !changed {
		return doc, false, nil
	}
	out, err := d.encode(want)
	if err != nil {
		return doc, false, err
	}
	return out, true, nil
}

// Remove returns doc without the cluster, user and context ddinit merged
// (those named docker-desktop that carry its mark), with current-context
// set to "" when it named the context removed, and whether that changed
// it. Entries of that name without the mark, and everything else, stay.
func Remove(doc []byte) ([]byte, bool, error) {
	d, err := parse(doc)
	if err != nil || d.created {
		return doc, false, err
	}
	want := maps.Clone(d.value)
	changed, removedContext := false, false
	for _, l := range lists {
		items, seq, err := d.list(l.key)
		if err != nil {
			return doc, false, err
		}
		kept := []any{}
		var nodes []*yaml.Node
		for i, it := range items {
			if named(it) && marked(l.field, it) {
				changed = true
				removedContext = removedContext || l.field == "context"
				continue
			}
			kept, nodes = append(kept, it), append(nodes, seq.Content[i])
		}
		if len(kept) != len(items) {
			want[l.key] = kept
			d.setList(l.key, nodes, false)
		}
	}
	if removedContext && want[CurrentContext] == Name {
		want[CurrentContext] = ""
		d.setString(CurrentContext, "")
	}
	if !changed {
		return doc, false, nil
	}
	out, err := d.encode(want)
	if err != nil {
		return doc, false, err
	}
	return out, true, nil
}

// Merged reports whether doc holds the cluster, user and context ddinit
// merged (each named docker-desktop, with its mark).
func Merged(doc []byte) bool {
	d, err := parse(doc)
	if err != nil || d.created {
		return false
	}
	for _, l := range lists {
		items, _ := d.value[l.key].([]any)
		if !slices.ContainsFunc(items, func(it any) bool { return named(it) && marked(l.field, it) }) {
			return false
		}
	}
	return true
}

// entry is the list entry for field ("cluster", "user", "context") as
// ddinit merges it over existing (nil when there is none).
func (o Offer) entry(field string, existing any) map[string]any {
	e := map[string]any{}
	if m, ok := existing.(map[string]any); ok {
		e = maps.Clone(m)
	}
	e["name"] = Name
	var f map[string]any
	switch field {
	case "cluster":
		f = maps.Clone(o.Cluster)
		f["extensions"] = []any{mark()}
	case "user":
		f = maps.Clone(o.User)
		f["extensions"] = []any{mark()}
	case "context":
		f = map[string]any{}
		if m, ok := e["context"].(map[string]any); ok {
			f = maps.Clone(m)
		}
		f["cluster"], f["user"] = Name, Name
		f["extensions"] = withMark(f["extensions"])
	}
	e[field] = f
	return e
}

// withMark is an extensions list with ddinit's mark in it, the others
// kept.
func withMark(v any) []any {
	list, _ := v.([]any)
	out := slices.Clone(list)
	for i, x := range out {
		if m, ok := x.(map[string]any); ok && m["name"] == markName {
			out[i] = mark()
			return out
		}
	}
	return append(out, mark())
}

// named reports an entry named docker-desktop.
func named(it any) bool {
	m, ok := it.(map[string]any)
	return ok && m["name"] == Name
}

// marked reports an entry whose field carries ddinit's mark.
func marked(field string, it any) bool {
	m, _ := it.(map[string]any)
	f, _ := m[field].(map[string]any)
	exts, _ := f["extensions"].([]any)
	return slices.ContainsFunc(exts, func(x any) bool {
		e, ok := x.(map[string]any)
		return ok && e["name"] == markName
	})
}

// same reports two values that mean the same.
func same(a, b any) bool {
	ca, errA := canonical(a)
	cb, errB := canonical(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}

// canonical is v as YAML with its keys sorted: equal for values that
// mean the same (NaN included, which == never finds equal).
func canonical(v any) (b []byte, err error) {
	defer recoverAs(&err)
	return yaml.Marshal(v)
}

// document is a kubeconfig as parsed for an edit: its nodes (what is
// written back, comments and order kept) and what they decode to (what
// the edit is checked against).
type document struct {
	node  *yaml.Node // the document
	root  *yaml.Node // its mapping
	value map[string]any
	// created: the file was empty (or missing); the document is a new
	// one.
	created bool
}

// newDocument is what a kubeconfig starts as.
const newDocument = "apiVersion: v1\nkind: Config\npreferences: {}\n"

func parse(b []byte) (*document, error) {
	if len(b) > MaxConfigBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d ddinit reads", ErrNotEditable, len(b), MaxConfigBytes)
	}
	n, err := parseNode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: it does not parse: %w", ErrNotEditable, err)
	}
	created := n == nil
	if created {
		if n, err = parseNode([]byte(newDocument)); err != nil {
			return nil, err
		}
	}
	if n.Kind != yaml.DocumentNode || len(n.Content) != 1 || n.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: it is not a mapping", ErrNotEditable)
	}
	var v any
	if err := decodeNode(n, &v); err != nil {
		return nil, fmt.Errorf("%w: it does not parse: %w", ErrNotEditable, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: its keys are not all strings", ErrNotEditable)
	}
	return &document{node: n, root: n.Content[0], value: m, created: created}, nil
}

// parseNode parses one YAML (or JSON) document; nil for none (an empty
// file, only comments, or null).
func parseNode(b []byte) (n *yaml.Node, err error) {
	defer recoverAs(&err)
	if json.Valid(b) {
		// kubectl reads JSON as JSON: a tab, an escaped slash or a
		// surrogate pair is JSON that YAML's parser refuses.
		return jsonNode(b)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one YAML document")
		}
		return nil, err
	}
	if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].ShortTag() == "!!null" {
		return nil, nil
	}
	return &doc, nil
}

// jsonNode is the YAML document of a JSON one, its keys in their order.
func jsonNode(b []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var value func() (*yaml.Node, error)
	value = func() (*yaml.Node, error) {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case json.Delim:
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if t == '[' {
				n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			}
			for dec.More() {
				if n.Kind == yaml.MappingNode {
					k, err := dec.Token()
					if err != nil {
						return nil, err
					}
					n.Content = append(n.Content, strNode(k.(string)))
				}
				v, err := value()
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token() // the closing delimiter
			return n, err
		case string:
			return strNode(t), nil
		case json.Number:
			return &yaml.Node{Kind: yaml.ScalarNode, Value: t.String()}, nil
		case bool:
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
		default: // null
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
		}
	}
	root, err := value()
	if err != nil {
		return nil, err
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}, nil
}

func strNode(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// decodeValue decodes YAML or JSON into v.
func decodeValue(b []byte, v any) error {
	n, err := parseNode(b)
	if err != nil || n == nil {
		return err
	}
	return decodeNode(n, v)
}

func decodeNode(n *yaml.Node, v any) (err error) {
	defer recoverAs(&err)
	return n.Decode(v)
}

// nodeOf is the node of an entry ddinit writes.
func nodeOf(v any) (n *yaml.Node, err error) {
	defer recoverAs(&err)
	n = new(yaml.Node)
	return n, n.Encode(v)
}

func keepComments(n, old *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = old.HeadComment, old.LineComment, old.FootComment
}

// lookup is the value node of key in the document's mapping (nil when
// it has none).
func (d *document) lookup(key string) (int, *yaml.Node) {
	for i := 0; i+1 < len(d.root.Content); i += 2 {
		if k := d.root.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!str" && k.Value == key {
			return i + 1, d.root.Content[i+1]
		}
	}
	return -1, nil
}

// list is the list at key, as values and as its sequence's nodes (nil
// for none: no key, or null). A list that is something else, or that
// the nodes do not hold as such (an alias, a merge key), is not edited.
func (d *document) list(key string) ([]any, *yaml.Node, error) {
	v := d.value[key]
	if v == nil {
		return nil, nil, nil
	}
	items, ok := v.([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%w: its %s is not a list", ErrNotEditable, key)
	}
	_, seq := d.lookup(key)
	if seq == nil || seq.Kind != yaml.SequenceNode || len(seq.Content) != len(items) {
		return nil, nil, fmt.Errorf("%w: its %s comes from an alias or a merge key", ErrNotEditable, key)
	}
	return items, seq, nil
}

// setList makes the list at key hold nodes; added: a new entry is among
// them, written in block style even where the list was flow ("[]").
func (d *document) setList(key string, nodes []*yaml.Node, added bool) {
	i, v := d.lookup(key)
	switch {
	case v == nil:
		d.root.Content = append(d.root.Content, strNode(key), &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: nodes})
	case v.Kind == yaml.SequenceNode:
		v.Content = nodes
		if added {
			v.Style &^= yaml.FlowStyle
		}
	default: // null, or an alias to it
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: nodes}
		keepComments(seq, v)
		d.root.Content[i] = seq
	}
}

// setString sets key to the string s.
func (d *document) setString(key, s string) {
	i, v := d.lookup(key)
	n := strNode(s)
	if v == nil {
		d.root.Content = append(d.root.Content, strNode(key), n)
		return
	}
	keepComments(n, v)
	d.root.Content[i] = n
}

// encode writes the edited document, and returns it only if it decodes
// to want: an edit that would change anything else (a removed entry held
// an anchor used elsewhere, the emitter misplaced a comment) is refused.
// Comments are dropped, as a last resort, when only they stand in the
// way.
func (d *document) encode(want map[string]any) ([]byte, error) {
	wantYAML, err := canonical(want)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotEditable, err)
	}
	var last error
	for _, strip := range []bool{false, true} {
		if strip {
			dropComments(d.node)
		}
		out, err := marshal(d.node)
		if err != nil {
			last = err
			continue
		}
		var got any
		if err := decodeValue(out, &got); err != nil {
			last = fmt.Errorf("the edit does not parse: %w", err)
			continue
		}
		if gotYAML, err := canonical(got); err != nil || !bytes.Equal(gotYAML, wantYAML) {
			last = errors.New("the edit would change more than ddinit's entries")
			continue
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrNotEditable, last)
}

func marshal(n *yaml.Node) (b []byte, err error) {
	defer recoverAs(&err)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func dropComments(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		dropComments(c)
	}
}

// recoverAs turns a panic of the YAML library (on input no kubeconfig
// holds) into an error: a user's odd file never stops the proxy.
func recoverAs(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("yaml: %v", r)
	}
}

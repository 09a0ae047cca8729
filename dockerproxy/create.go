package dockerproxy

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// SourceKind says where a bind source came from, which decides what a
// missing source means.
type SourceKind int

const (
	// FromBinds is HostConfig.Binds (docker run -v): a missing source is
	// created, as Docker Engine does on Linux.
	FromBinds SourceKind = iota
	// FromMounts is HostConfig.Mounts (docker run --mount): a missing
	// source is an error.
	FromMounts
)

// Translator maps a bind source to the path the engine sees; ok false
// leaves it as it is (a named volume, an engine path). An error is the
// client's mistake: a 400 naming it.
type Translator func(src string, kind SourceKind) (dst string, ok bool, err error)

// Create is a POST /containers/create body being edited. It is read only
// as far as the edits need, as dockerd reads it (see object), and edited
// in place (see jsonspan.go): the edits say what a field becomes, and
// every byte they do not edit reaches the engine as sent.
type Create struct {
	body []byte
	top  *object
	// host is the object dockerd reads the host's settings from: the
	// HostConfig; in a body without one, the top level for an engine
	// that reads them there (dockerd before API 1.46), or a HostConfig
	// the edits add. Found when an edit first needs it (hostFor).
	host      *object
	hostFound bool
	// hostName is how errors name host's fields: "HostConfig." or "".
	hostName string
	layout   HostLayout
	objects  []*object // every object read, inner ones first at finish
	// Rewritten maps each bind source an edit rewrote to the one sent.
	Rewritten map[string]string
}

// HostLayout says whether the engine the body goes to reads the host's
// settings at the top level of a body without a HostConfig, as dockerd
// 20.10 did (its request type embedded HostConfig; API 1.46, dockerd 27,
// dropped it). It is asked only for such a body, at most once.
type HostLayout func() (atTop bool, err error)

// HostAtTop and HostInHostConfig are the two layouts, for an engine known
// in advance.
var (
	HostAtTop        HostLayout = func() (bool, error) { return true, nil }
	HostInHostConfig HostLayout = func() (bool, error) { return false, nil }
)

// EngineError is an edit that needed the engine (its version) and could
// not reach it: not the client's mistake.
type EngineError struct{ Err error }

func (e *EngineError) Error() string { return "the docker engine could not be asked: " + e.Err.Error() }
func (e *EngineError) Unwrap() error { return e.Err }

// CreateEdit is one edit of a create body. Edits run in order on one
// body; a feature that changes creates adds an edit, not a parser. An
// error is the client's mistake (a 400 naming it), but an *EngineError.
type CreateEdit func(c *Create) error

// object is a JSON object of the body, and what the edits make of it.
type object struct {
	at span // the braces; virtual (a HostConfig the edits add): start -1
	// name and prefix name it in errors ("the create request" and "",
	// "HostConfig" and "HostConfig.").
	name, prefix string
	// fields are the values of the fields the edits may read, keyed as
	// dockerd reads keys (see readObject), or for a map (Labels) as sent,
	// the last of a key given twice.
	fields map[string]span
	// twice are the fields given twice, and how: refused when an edit
	// reads or writes one.
	twice   map[string]error
	members int
	set     map[string][]byte // field → new value
	order   []string          // set's fields in the order set
	lists   map[string]*stringList
}

func (o *object) virtual() bool { return o.at.start < 0 }

// setField makes field's value text: replaced where given, added where
// not.
func (o *object) setField(field string, text []byte) {
	if o.set == nil {
		o.set = map[string][]byte{}
	}
	if _, ok := o.set[field]; !ok {
		o.order = append(o.order, field)
	}
	o.set[field] = text
}

// stringList is a field that is a list of strings, and what the edits
// make of it: elements replaced and elements added at its end.
type stringList struct {
	at       span // the array; start -1 when absent or null
	elems    []span
	Values   []string
	replaced map[int]string
	added    []string
}

// EditCreate applies edits to a create body bound for an engine whose
// layout is layout. A body no edit changed comes back unchanged; one they
// changed differs only in the spans they edited.
func EditCreate(body []byte, layout HostLayout, edits ...CreateEdit) ([]byte, error) {
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, fmt.Errorf("the create request is not JSON: %w", err)
	}
	c := &Create{body: body, layout: layout, Rewritten: map[string]string{}}
	start := skipSpace(body, 0)
	whole := span{start, valueEnd(body, start)}
	if kindOf(body, whole) != '{' {
		return nil, fmt.Errorf("the create request is not a JSON object: %s", clip(body[whole.start:whole.end]))
	}
	// The top level's host fields are read too: an engine that reads them
	// there takes them when the body has no HostConfig.
	var err error
	if c.top, err = c.readObject(whole, "the create request", "", slices.Concat(createFields, hostFields)); err != nil {
		return nil, err
	}
	for _, edit := range edits {
		if err := edit(c); err != nil {
			return nil, err
		}
	}
	patches, err := c.patches()
	if err != nil {
		return nil, err
	}
	if len(patches) == 0 {
		return body, nil
	}
	return applyPatches(body, patches)
}

// readObject reads the object at s as dockerd decodes it into a struct
// with fields: encoding/json takes a key for a field whatever its case
// ("hostConfig", "binds", even "Bindſ" with a long s or a Kelvin sign for
// k). Two keys for one of fields (the same key twice, or two cases of it)
// are refused when an edit reads or writes that field: encoding/json
// decodes both into it, the later one replacing the earlier or merging
// into it, and an edit of one would not be what dockerd uses. Keys for
// other fields are not looked at: they pass as sent, given twice or not.
func (c *Create) readObject(s span, name, prefix string, fields []string) (*object, error) {
	o := &object{at: s, name: name, prefix: prefix, fields: map[string]span{}}
	given := map[string]string{} // field → the key that gave it
	for _, m := range objectMembers(c.body, s) {
		o.members++
		// strings.EqualFold folds as encoding/json matches names (Unicode
		// simple folding: K and ſ are k and s to both).
		i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, m.key) })
		if i < 0 {
			continue
		}
		field := fields[i]
		if first, ok := given[field]; ok {
			if o.twice == nil {
				o.twice = map[string]error{}
			}
			if o.twice[field] == nil {
				// %+q: a Kelvin sign or a long s shows as what it is.
				o.twice[field] = fmt.Errorf("%s%s given twice (as %+q and %+q): give it once", prefix, field, first, m.key)
			}
			continue
		}
		given[field] = m.key
		o.fields[field] = m.value
	}
	c.objects = append(c.objects, o)
	return o, nil
}

// readMap reads the object at s as a map: keys as sent, the last of a key
// given twice being the one dockerd keeps.
func (c *Create) readMap(s span, name string) *object {
	o := &object{at: s, name: name, prefix: name + ".", fields: map[string]span{}}
	for _, m := range objectMembers(c.body, s) {
		o.members++
		o.fields[m.key] = m.value
	}
	c.objects = append(c.objects, o)
	return o
}

// value is the raw value of o's field, and whether it is given (not
// absent, not null); an error when it is given twice.
func (c *Create) value(o *object, field string) (span, bool, error) {
	if err := o.twice[field]; err != nil {
		return span{}, false, err
	}
	s, ok := o.fields[field]
	if !ok || o.virtual() || isNull(c.body, s) {
		return span{-1, -1}, false, nil
	}
	return s, true, nil
}

// hostFor is the object dockerd reads the host's settings from, found
// once: HostConfig when the body gives one; else, for an engine that
// reads them at the top level, the top level; else none (nil), or, when
// write, a HostConfig added to the body.
func (c *Create) hostFor(write bool) (*object, error) {
	if !c.hostFound {
		s, ok, err := c.value(c.top, "HostConfig")
		if err != nil {
			return nil, err
		}
		if ok {
			if kindOf(c.body, s) != '{' {
				return nil, fmt.Errorf("HostConfig is not a JSON object: %s", clip(c.body[s.start:s.end]))
			}
			host, err := c.readObject(s, "HostConfig", "HostConfig.", hostFields)
			if err != nil {
				return nil, err
			}
			c.host, c.hostName = host, "HostConfig."
		} else if write || slices.ContainsFunc(hostFields, func(f string) bool { _, ok := c.top.fields[f]; return ok }) {
			// Only a body that gives host fields at its top level, or one
			// an edit adds to, needs to know how the engine reads it.
			atTop, err := c.layout()
			if err != nil {
				return nil, &EngineError{err}
			}
			if atTop {
				c.host = c.top
			}
		} else {
			return nil, nil // nothing to read, and nothing asked yet
		}
		c.hostFound = true
	}
	if c.host == nil && write {
		c.host = &object{at: span{-1, -1}, name: "HostConfig", prefix: "HostConfig.", fields: map[string]span{}}
		c.hostName = "HostConfig."
		c.objects = append(c.objects, c.host)
	}
	return c.host, nil
}

// strings reads o's field as a list of strings: nil when absent or null.
func (c *Create) strings(o *object, field string) (*stringList, error) {
	if l, ok := o.lists[field]; ok {
		return l, nil
	}
	l := &stringList{at: span{-1, -1}}
	s, ok, err := c.value(o, field)
	if err != nil {
		return nil, err
	}
	if ok {
		if err := json.Unmarshal(c.body[s.start:s.end], &l.Values); err != nil || kindOf(c.body, s) != '[' {
			return nil, fmt.Errorf("%s%s is not a list of strings: %s", o.prefix, field, clip(c.body[s.start:s.end]))
		}
		l.at, l.elems = s, arrayElements(c.body, s)
	}
	if o.lists == nil {
		o.lists = map[string]*stringList{}
	}
	o.lists[field] = l
	return l, nil
}

// replace makes element i s.
func (l *stringList) replace(i int, s string) {
	if l.replaced == nil {
		l.replaced = map[int]string{}
	}
	l.replaced[i] = s
	l.Values[i] = s
}

// add adds elements at the end.
func (l *stringList) add(s ...string) {
	l.added = append(l.added, s...)
	l.Values = append(l.Values, s...)
}

// patches turns what the edits made into patches of the body: inner
// objects first, as a HostConfig the edits added becomes a field of the
// top level.
func (c *Create) patches() ([]patch, error) {
	var out []patch
	for i := len(c.objects) - 1; i >= 0; i-- {
		o := c.objects[i]
		for _, field := range slices.Sorted(maps.Keys(o.lists)) {
			l := o.lists[field]
			if l.at.start < 0 {
				if len(l.added) > 0 {
					o.setField(field, quoteAll(l.added))
				}
				continue
			}
			for _, i := range slices.Sorted(maps.Keys(l.replaced)) {
				out = append(out, patch{l.elems[i], quote(l.replaced[i])})
			}
			if len(l.added) > 0 {
				text := quoteAll(l.added)
				text = text[1 : len(text)-1] // the elements, without brackets
				if len(l.elems) > 0 {
					text = append([]byte{','}, text...)
				}
				end := l.at.end - 1
				out = append(out, patch{span{end, end}, text})
			}
		}
		var members []byte
		for _, field := range o.order {
			text := o.set[field]
			if s, ok := o.fields[field]; ok && !o.virtual() {
				out = append(out, patch{s, text})
				continue
			}
			if len(members) > 0 || o.members > 0 && !o.virtual() {
				members = append(members, ',')
			}
			members = append(append(append(members, quote(field)...), ':'), text...)
		}
		switch {
		case len(members) == 0:
		case o.virtual():
			c.top.setField("HostConfig", append(append([]byte{'{'}, members...), '}'))
		default:
			end := o.at.end - 1
			out = append(out, patch{span{end, end}, members})
		}
	}
	return out, nil
}

func quote(s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

func quoteAll(s []string) []byte {
	b, _ := json.Marshal(s) // a []string always encodes
	return b
}

// clip is a value for an error message: at most 64 bytes of it.
func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:61]) + "..."
	}
	return string(b)
}

// RewriteBinds is the edit that rewrites bind sources with translate: each
// "src:dst[:opts]" of HostConfig.Binds and the Source of each
// HostConfig.Mounts entry of type bind.
func RewriteBinds(translate Translator) CreateEdit {
	return func(c *Create) error {
		if translate == nil {
			return nil
		}
		host, err := c.hostFor(false)
		if err != nil || host == nil {
			return err
		}
		binds, err := c.strings(host, "Binds")
		if err != nil {
			return err
		}
		for i, b := range binds.Values {
			src, rest := splitBind(b)
			dst, ok, err := translate(src, FromBinds)
			if err != nil {
				return fmt.Errorf("bind %q: %w", b, err)
			}
			if ok {
				binds.replace(i, dst+rest)
				c.Rewritten[dst] = src
			}
		}
		s, ok, err := c.value(host, "Mounts")
		if err != nil || !ok {
			return err
		}
		if kindOf(c.body, s) != '[' {
			return fmt.Errorf("%sMounts is not a list of objects: %s", c.hostName, clip(c.body[s.start:s.end]))
		}
		for i, e := range arrayElements(c.body, s) {
			name := fmt.Sprintf("%sMounts[%d]", c.hostName, i)
			if kindOf(c.body, e) == 'n' {
				continue // null: no mount, as encoding/json reads it
			}
			if kindOf(c.body, e) != '{' {
				return fmt.Errorf("%s is not a JSON object: %s", name, clip(c.body[e.start:e.end]))
			}
			m, err := c.readObject(e, name, name+".", mountFields)
			if err != nil {
				return err
			}
			var typ, src string
			t, ok, err := c.value(m, "Type")
			if err != nil {
				return err
			}
			if ok {
				json.Unmarshal(c.body[t.start:t.end], &typ) // not a string: not a bind, left alone
			}
			if typ != "bind" {
				continue
			}
			s, ok, err := c.value(m, "Source")
			if err != nil {
				return err
			}
			if ok {
				if err := json.Unmarshal(c.body[s.start:s.end], &src); err != nil {
					return fmt.Errorf("%s.Source is not a string", name)
				}
			}
			dst, ok, err := translate(src, FromMounts)
			if err != nil {
				return fmt.Errorf("mount source %q: %w", src, err)
			}
			if ok {
				m.setField("Source", quote(dst))
				c.Rewritten[dst] = src
			}
		}
		return nil
	}
}

// LabelRewritten is the edit that labels the container with what the
// edits before it rewrote: a JSON object from each new source to the one
// sent, so that the binds can be made again later. A label a proxy before
// this one set (a distro's, then the shared socket's) is merged, not
// replaced.
func LabelRewritten(label string) CreateEdit {
	return func(c *Create) error {
		if label == "" || len(c.Rewritten) == 0 {
			return nil
		}
		merged := map[string]string{}
		for dst, src := range c.Rewritten {
			merged[dst] = src
		}
		s, ok, err := c.value(c.top, "Labels")
		if err != nil {
			return err
		}
		if !ok {
			value, _ := json.Marshal(merged)
			labels, _ := json.Marshal(map[string]string{label: string(value)})
			c.top.setField("Labels", labels)
			return nil
		}
		if kindOf(c.body, s) != '{' {
			return fmt.Errorf("Labels is not a JSON object: %s", clip(c.body[s.start:s.end]))
		}
		labels := c.readMap(s, "Labels")
		if v, ok := labels.fields[label]; ok {
			var before string
			if json.Unmarshal(c.body[v.start:v.end], &before) == nil {
				var earlier map[string]string
				json.Unmarshal([]byte(before), &earlier) // not a proxy's: nothing to keep
				for dst, src := range earlier {
					if _, ok := merged[dst]; !ok {
						merged[dst] = src
					}
				}
			}
		}
		value, _ := json.Marshal(merged)
		labels.setField(label, quote(string(value)))
		return nil
	}
}

// AddHosts is the edit that gives the container /etc/hosts entries for
// names (name → address), when when says the container needs them: a name
// the body's HostConfig.ExtraHosts already gives is left as the user
// sent it.
func AddHosts(names func() map[string]string, when func(c *Create) (bool, error)) CreateEdit {
	return func(c *Create) error {
		need, err := when(c)
		if err != nil || !need {
			return err
		}
		if shares, err := c.sharesNetwork(); err != nil || shares {
			return err
		}
		all := names()
		host, err := c.hostFor(false)
		if err != nil {
			return err
		}
		given := map[string]bool{}
		if host != nil {
			extra, err := c.strings(host, "ExtraHosts")
			if err != nil {
				return err
			}
			for _, e := range extra.Values {
				name, _, _ := strings.Cut(e, ":")
				given[strings.ToLower(name)] = true
			}
		}
		var add []string
		for _, name := range slices.Sorted(maps.Keys(all)) {
			if !given[name] && all[name] != "" {
				add = append(add, name+":"+all[name])
			}
		}
		if len(add) == 0 {
			return nil
		}
		if host, err = c.hostFor(true); err != nil {
			return err
		}
		extra, err := c.strings(host, "ExtraHosts")
		if err != nil {
			return err
		}
		extra.add(add...)
		return nil
	}
}

// AddEnv is the edit that gives a new container the variables vars says
// (upper-case names), each in both cases, as tools read either
// (HTTP_PROXY, http_proxy): unless the request sets the variable in either
// case itself — an empty value is the user's opt-out, kept as sent.
func AddEnv(vars func() map[string]string) CreateEdit {
	return func(c *Create) error {
		add := vars()
		if len(add) == 0 {
			return nil
		}
		env, err := c.strings(c.top, "Env")
		if err != nil {
			return err
		}
		set := map[string]bool{}
		for _, e := range env.Values {
			name, _, _ := strings.Cut(e, "=")
			set[strings.ToUpper(name)] = true
		}
		for _, name := range slices.Sorted(maps.Keys(add)) {
			if !set[strings.ToUpper(name)] {
				env.add(name+"="+add[name], strings.ToLower(name)+"="+add[name])
			}
		}
		return nil
	}
}

// sharesNetwork reports a container that joins another's network
// (--network container:X, compose's network_mode: service:x): dockerd
// refuses extra hosts for it, as its /etc/hosts is the other's.
func (c *Create) sharesNetwork() (bool, error) {
	host, err := c.hostFor(false)
	if err != nil || host == nil {
		return false, err
	}
	var mode string
	s, ok, err := c.value(host, "NetworkMode")
	return ok && json.Unmarshal(c.body[s.start:s.end], &mode) == nil && strings.HasPrefix(mode, "container:"), err
}

// SetsDNS reports whether the create names its own DNS servers
// (HostConfig.Dns, docker run --dns), where the engine reads it.
func (c *Create) SetsDNS() (bool, error) {
	host, err := c.hostFor(false)
	if err != nil || host == nil {
		return false, err
	}
	dns, err := c.strings(host, "Dns")
	if err != nil {
		return false, err
	}
	return len(dns.Values) > 0, nil
}

// The fields of dockerd's create request that the edits read or write, by
// the struct that holds them there: the request (container.Config and
// HostConfig), HostConfig, and a mount (mount.Mount). readObject keys
// these as dockerd does; an edit names only these.
var (
	createFields = []string{"HostConfig", "Labels", "Env"}
	hostFields   = []string{"Binds", "Mounts", "ExtraHosts", "NetworkMode", "Dns"}
	mountFields  = []string{"Type", "Source"}
)

// RewriteCreate rewrites a create body's bind sources with translate and,
// with label set, labels the container with what was rewritten.
func RewriteCreate(body []byte, layout HostLayout, translate Translator, label string) ([]byte, error) {
	return EditCreate(body, layout, RewriteBinds(translate), LabelRewritten(label))
}

// splitBind splits "src:dst[:opts]" into src and ":dst[:opts]". A Windows
// source keeps its drive's colon: "C:\x:/y" is "C:\x" and ":/y".
func splitBind(b string) (src, rest string) {
	start := 0
	if isDrivePath(b) {
		start = 2
	}
	i := strings.IndexByte(b[start:], ':')
	if i < 0 {
		return b, ""
	}
	return b[:start+i], b[start+i:]
}

// isDrivePath reports "C:\…", "C:/…" (or a bare "C:").
func isDrivePath(s string) bool {
	return len(s) >= 2 && isLetter(s[0]) && s[1] == ':' && (len(s) == 2 || s[2] == '\\' || s[2] == '/')
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Chain tries translators in turn: the first that takes a source (or
// fails on it) decides.
func Chain(ts ...Translator) Translator {
	return func(src string, kind SourceKind) (string, bool, error) {
		for _, t := range ts {
			if dst, ok, err := t(src, kind); ok || err != nil {
				return dst, ok, err
			}
		}
		return "", false, nil
	}
}

package dockerproxy

import (
	"bytes"
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

// Create is a POST /containers/create body being edited: decoded only as
// far as the edits need (raw JSON, never typed structs), so that every
// field this code does not know is kept as sent. The keys of top, host
// and each mount entry are as decodeStruct leaves them: an edit that reads
// or writes a field adds it to createFields, hostFields or mountFields.
type Create struct {
	top map[string]json.RawMessage
	// host is the object dockerd reads the host's settings from: the
	// HostConfig; or, in a body without one that gives them at the top
	// level (an older client's layout, which dockerd 20.10 still reads
	// when HostConfig is absent or null), top itself; nil: neither.
	host map[string]json.RawMessage
	// hostName is how errors name host: "HostConfig." or "".
	hostName string
	// Rewritten maps each bind source an edit rewrote to the one sent.
	Rewritten map[string]string
	changed   bool
}

// CreateEdit is one edit of a create body. Edits run in order on one
// decoded body; a feature that changes creates adds an edit, not a parser.
// An error is the client's mistake: a 400 naming it.
type CreateEdit func(c *Create) error

// EditCreate applies edits to a create body. A body no edit changed comes
// back unchanged, byte for byte.
func EditCreate(body []byte, edits ...CreateEdit) ([]byte, error) {
	c := &Create{Rewritten: map[string]string{}, hostName: "HostConfig."}
	var err error
	// The top level's host fields are read too: dockerd takes them when
	// the body has no HostConfig.
	if c.top, err = decodeStruct(body, slices.Concat(createFields, hostFields), ""); err != nil {
		return nil, err
	}
	if c.top == nil {
		return nil, fmt.Errorf("the create request is not a JSON object: null")
	}
	if raw, ok := c.top["HostConfig"]; ok {
		if c.host, err = decodeStruct(raw, hostFields, "HostConfig"); err != nil {
			return nil, err
		}
	}
	if c.host == nil && slices.ContainsFunc(hostFields, func(f string) bool { _, ok := c.top[f]; return ok }) {
		c.host, c.hostName = c.top, ""
	}
	for _, edit := range edits {
		if err := edit(c); err != nil {
			return nil, err
		}
	}
	if !c.changed {
		return body, nil
	}
	if c.host != nil && c.hostName != "" {
		if c.top["HostConfig"], err = json.Marshal(c.host); err != nil {
			return nil, fmt.Errorf("HostConfig: %w", err)
		}
	}
	return json.Marshal(c.top)
}

// RewriteBinds is the edit that rewrites bind sources with translate: each
// "src:dst[:opts]" of HostConfig.Binds and the Source of each
// HostConfig.Mounts entry of type bind.
func RewriteBinds(translate Translator) CreateEdit {
	return func(c *Create) error {
		if c.host == nil || translate == nil {
			return nil
		}
		if raw, ok := c.host["Binds"]; ok && string(raw) != "null" {
			var binds []string
			if err := json.Unmarshal(raw, &binds); err != nil {
				return fmt.Errorf("%sBinds is not a list of strings: %w", c.hostName, err)
			}
			changed := false
			for i, b := range binds {
				src, rest := splitBind(b)
				dst, ok, err := translate(src, FromBinds)
				if err != nil {
					return fmt.Errorf("bind %q: %w", b, err)
				}
				if ok {
					binds[i], changed = dst+rest, true
					c.Rewritten[dst] = src
				}
			}
			if changed {
				c.host["Binds"], _ = json.Marshal(binds) // a []string always encodes
				c.changed = true
			}
		}
		if raw, ok := c.host["Mounts"]; ok && string(raw) != "null" {
			var entries []json.RawMessage
			if err := json.Unmarshal(raw, &entries); err != nil {
				return fmt.Errorf("%sMounts is not a list of objects: %w", c.hostName, err)
			}
			mounts := make([]map[string]json.RawMessage, len(entries))
			for i, e := range entries {
				var err error
				if mounts[i], err = decodeStruct(e, mountFields, fmt.Sprintf("%sMounts[%d]", c.hostName, i)); err != nil {
					return err
				}
			}
			changed := false
			for i, m := range mounts {
				var typ, src string
				json.Unmarshal(m["Type"], &typ) // no type, or not a string: not a bind, left alone
				if typ != "bind" {
					continue
				}
				if err := json.Unmarshal(m["Source"], &src); err != nil {
					return fmt.Errorf("%sMounts[%d].Source is not a string", c.hostName, i)
				}
				dst, ok, err := translate(src, FromMounts)
				if err != nil {
					return fmt.Errorf("mount source %q: %w", src, err)
				}
				if ok {
					m["Source"], _ = json.Marshal(dst)
					changed = true
					c.Rewritten[dst] = src
				}
			}
			if changed {
				c.host["Mounts"], _ = json.Marshal(mounts) // raw messages that decoded encode again
				c.changed = true
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
		labels := map[string]json.RawMessage{}
		if raw, ok := c.top["Labels"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &labels); err != nil {
				return fmt.Errorf("Labels is not a JSON object: %w", err)
			}
		}
		merged := map[string]string{}
		var before string
		if json.Unmarshal(labels[label], &before) == nil {
			json.Unmarshal([]byte(before), &merged) // not a proxy's: nothing to keep
		}
		for dst, src := range c.Rewritten {
			merged[dst] = src
		}
		value, _ := json.Marshal(merged)
		labels[label], _ = json.Marshal(string(value))
		c.top["Labels"], _ = json.Marshal(labels)
		c.changed = true
		return nil
	}
}

// AddHosts is the edit that gives the container /etc/hosts entries for
// names (name → address), when when says the container needs them: a name
// the body's HostConfig.ExtraHosts already gives is left as the user
// sent it.
func AddHosts(names func() map[string]string, when func(c *Create) bool) CreateEdit {
	return func(c *Create) error {
		if !when(c) || c.sharesNetwork() {
			return nil
		}
		var extra []string
		if raw, ok := c.host["ExtraHosts"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &extra); err != nil {
				return fmt.Errorf("%sExtraHosts is not a list of strings: %w", c.hostName, err)
			}
		}
		given := map[string]bool{}
		for _, e := range extra {
			name, _, _ := strings.Cut(e, ":")
			given[strings.ToLower(name)] = true
		}
		added := false
		all := names()
		keys := make([]string, 0, len(all))
		for name := range all {
			keys = append(keys, name)
		}
		slices.Sort(keys)
		for _, name := range keys {
			if !given[name] && all[name] != "" {
				extra = append(extra, name+":"+all[name])
				added = true
			}
		}
		if !added {
			return nil
		}
		if c.host == nil {
			c.host = map[string]json.RawMessage{}
		}
		c.host["ExtraHosts"], _ = json.Marshal(extra) // a []string always encodes
		c.changed = true
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
		var env []string
		if raw, ok := c.top["Env"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &env); err != nil {
				return fmt.Errorf("Env is not a list of strings: %w", err)
			}
		}
		set := map[string]bool{}
		for _, e := range env {
			name, _, _ := strings.Cut(e, "=")
			set[strings.ToUpper(name)] = true
		}
		changed := false
		for _, name := range slices.Sorted(maps.Keys(add)) {
			if set[strings.ToUpper(name)] {
				continue
			}
			env = append(env, name+"="+add[name], strings.ToLower(name)+"="+add[name])
			changed = true
		}
		if changed {
			c.top["Env"], _ = json.Marshal(env) // a []string always encodes
			c.changed = true
		}
		return nil
	}
}

// sharesNetwork reports a container that joins another's network
// (--network container:X, compose's network_mode: service:x): dockerd
// refuses extra hosts for it, as its /etc/hosts is the other's.
func (c *Create) sharesNetwork() bool {
	var mode string
	return c.host != nil && json.Unmarshal(c.host["NetworkMode"], &mode) == nil && strings.HasPrefix(mode, "container:")
}

// SetsDNS reports whether the create names its own DNS servers
// (HostConfig.Dns, docker run --dns).
func (c *Create) SetsDNS() bool {
	var dns []string
	return c.host != nil && json.Unmarshal(c.host["Dns"], &dns) == nil && len(dns) > 0
}

// The fields of dockerd's create request that the edits read or write, by
// the struct that holds them there: the request (container.Config and
// HostConfig), HostConfig, and a mount (mount.Mount).
var (
	createFields = []string{"HostConfig", "Labels", "Env"}
	hostFields   = []string{"Binds", "Mounts", "ExtraHosts", "NetworkMode", "Dns"}
	mountFields  = []string{"Type", "Source"}
)

// decodeStruct decodes raw, a JSON object (or null: nil) that dockerd
// decodes into a struct, keyed as dockerd will read it. dockerd decodes
// with encoding/json, which takes a key for a field whatever its case
// ("hostConfig", "binds", even "Bindſ" with a long s or a Kelvin sign for
// k): such a key, for one of fields, is renamed to the field's name, so
// that the edits see, and rewrite, what dockerd will use. Two keys for one
// of fields (the same key twice, or two cases of it) are refused:
// encoding/json decodes both into that field, the later one replacing the
// earlier or merging into it, and the edits would see one of them only.
// Every other key is kept as sent. name is the object's, for errors ("":
// the request).
func decodeStruct(raw []byte, fields []string, name string) (map[string]json.RawMessage, error) {
	what, prefix := "the create request", ""
	if name != "" {
		what, prefix = name, name+"."
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object: %w", what, err)
	}
	if obj == nil {
		return nil, nil
	}
	// The keys again, in order and each time sent: the map kept only the
	// last of keys sent twice. raw is valid JSON: the decoder reads it as
	// Unmarshal did.
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	given := map[string]string{} // field → the key that gave it
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		key, _ := tok.(string) // a key is always a string token
		if err := dec.Decode(new(json.RawMessage)); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		// strings.EqualFold folds as encoding/json matches names (Unicode
		// simple folding: K and ſ are k and s to both).
		i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, key) })
		if i < 0 {
			continue
		}
		field := fields[i]
		if first, ok := given[field]; ok {
			// %+q: a Kelvin sign or a long s shows as what it is.
			return nil, fmt.Errorf("%s%s given twice (as %+q and %+q): give it once", prefix, field, first, key)
		}
		given[field] = key
		if key != field {
			obj[field] = obj[key]
			delete(obj, key)
		}
	}
	return obj, nil
}

// RewriteCreate rewrites a create body's bind sources with translate and,
// with label set, labels the container with what was rewritten.
func RewriteCreate(body []byte, translate Translator, label string) ([]byte, error) {
	return EditCreate(body, RewriteBinds(translate), LabelRewritten(label))
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

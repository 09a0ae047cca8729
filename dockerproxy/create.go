package dockerproxy

import (
	"encoding/json"
	"fmt"
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

// RewriteCreate rewrites the bind sources of a POST /containers/create
// body with translate: each "src:dst[:opts]" of HostConfig.Binds and the
// Source of each HostConfig.Mounts entry of type bind. Everything else in
// the body is kept as sent, fields this code does not know included (it
// is decoded as raw JSON, never into typed structs). A body with nothing
// to rewrite comes back unchanged, byte for byte. With label set, the
// container is labelled with what was rewritten (a JSON object from each
// new source to the one sent), so that the binds can be made again later.
func RewriteCreate(body []byte, translate Translator, label string) ([]byte, error) {
	rewritten := map[string]string{}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("the create request is not a JSON object: %w", err)
	}
	rawHost, ok := top["HostConfig"]
	if !ok || string(rawHost) == "null" {
		return body, nil
	}
	var host map[string]json.RawMessage
	if err := json.Unmarshal(rawHost, &host); err != nil {
		return nil, fmt.Errorf("HostConfig is not a JSON object: %w", err)
	}
	changed := false
	if raw, ok := host["Binds"]; ok && string(raw) != "null" {
		var binds []string
		if err := json.Unmarshal(raw, &binds); err != nil {
			return nil, fmt.Errorf("HostConfig.Binds is not a list of strings: %w", err)
		}
		for i, b := range binds {
			src, rest := splitBind(b)
			dst, ok, err := translate(src, FromBinds)
			if err != nil {
				return nil, fmt.Errorf("bind %q: %w", b, err)
			}
			if ok {
				binds[i], changed = dst+rest, true
				rewritten[dst] = src
			}
		}
		host["Binds"], _ = json.Marshal(binds) // a []string always encodes
	}
	if raw, ok := host["Mounts"]; ok && string(raw) != "null" {
		var mounts []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &mounts); err != nil {
			return nil, fmt.Errorf("HostConfig.Mounts is not a list of objects: %w", err)
		}
		for i, m := range mounts {
			var typ, src string
			json.Unmarshal(m["Type"], &typ) // no type, or not a string: not a bind, left alone
			if typ != "bind" {
				continue
			}
			if err := json.Unmarshal(m["Source"], &src); err != nil {
				return nil, fmt.Errorf("HostConfig.Mounts[%d].Source is not a string", i)
			}
			dst, ok, err := translate(src, FromMounts)
			if err != nil {
				return nil, fmt.Errorf("mount source %q: %w", src, err)
			}
			if ok {
				m["Source"], _ = json.Marshal(dst)
				changed = true
				rewritten[dst] = src
			}
		}
		host["Mounts"], _ = json.Marshal(mounts) // raw messages that decoded encode again
	}
	if !changed {
		return body, nil
	}
	var err error
	if top["HostConfig"], err = json.Marshal(host); err != nil {
		return nil, fmt.Errorf("HostConfig: %w", err)
	}
	if label != "" {
		labels := map[string]json.RawMessage{}
		if raw, ok := top["Labels"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &labels); err != nil {
				return nil, fmt.Errorf("Labels is not a JSON object: %w", err)
			}
		}
		// A create that passed another proxy first (a distro's, then the
		// shared socket's) keeps what that one rewrote too.
		var before string
		if json.Unmarshal(labels[label], &before) == nil {
			var earlier map[string]string
			json.Unmarshal([]byte(before), &earlier) // not a proxy's: nothing to keep
			for dst, src := range earlier {
				if _, ok := rewritten[dst]; !ok {
					rewritten[dst] = src
				}
			}
		}
		value, _ := json.Marshal(rewritten)
		labels[label], _ = json.Marshal(string(value))
		top["Labels"], _ = json.Marshal(labels)
	}
	return json.Marshal(top)
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

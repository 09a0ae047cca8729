package dockerproxy

import (
	"encoding/json"
	"fmt"
	"strings"
)

// RewriteCreate rewrites the bind sources of a POST /containers/create
// body with translate: each "src:dst[:opts]" of HostConfig.Binds and the
// Source of each HostConfig.Mounts entry of type bind. Everything else in
// the body is kept as sent, fields this code does not know included (it
// is decoded as raw JSON, never into typed structs). A body with nothing
// to rewrite comes back unchanged, byte for byte.
func RewriteCreate(body []byte, translate func(string) (string, bool, error)) ([]byte, error) {
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
			dst, ok, err := translate(src)
			if err != nil {
				return nil, fmt.Errorf("bind %q: %w", b, err)
			}
			if ok {
				binds[i], changed = dst+rest, true
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
			json.Unmarshal(m["Type"], &typ)
			if typ != "bind" {
				continue
			}
			if err := json.Unmarshal(m["Source"], &src); err != nil {
				return nil, fmt.Errorf("HostConfig.Mounts[%d].Source is not a string", i)
			}
			dst, ok, err := translate(src)
			if err != nil {
				return nil, fmt.Errorf("mount source %q: %w", src, err)
			}
			if ok {
				m["Source"], _ = json.Marshal(dst)
				changed = true
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

package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Document is the settings the frontend owns. Fields that are not set
// leave ddinit's own (the config's, the version pack's) in force.
type Document struct {
	// DaemonJSON is the user's daemon.json, as an object.
	DaemonJSON map[string]json.RawMessage `json:"daemonJSON,omitempty"`
	// Kubernetes switches the services whose setting is "kubernetes".
	Kubernetes *bool `json:"kubernetes,omitempty"`
	// Proxy is the HTTP proxy of the engine, new containers and builds.
	Proxy *Proxy `json:"proxy,omitempty"`
	// TrustedCAs are PEM certificates the engine trusts besides the
	// version pack's bundle (a company's TLS-inspecting CA).
	TrustedCAs []string `json:"trustedCAs,omitempty"`
	// IdleStop is how long the engine may go unused before it is stopped
	// ("5m"; "0" never), over the config's.
	IdleStop *string `json:"idleStop,omitempty"`
	// IdlePause is how long the engine may go unused before it is frozen
	// ("30s"; "0" never), over the config's.
	IdlePause *string `json:"idlePause,omitempty"`
	// HostNetworkPorts forwards what host-network containers listen on to
	// the distro's loopback (on when not set).
	HostNetworkPorts *bool `json:"hostNetworkPorts,omitempty"`
}

// HostNetworkPortsOn is the document's hostNetworkPorts: on unless it is
// set false.
func (d Document) HostNetworkPortsOn() bool { return d.HostNetworkPorts == nil || *d.HostNetworkPorts }

// IdlePauseDuration is the document's idlePause; ok false when it sets none.
func (d Document) IdlePauseDuration() (time.Duration, bool) {
	if d.IdlePause == nil {
		return 0, false
	}
	v, err := time.ParseDuration(*d.IdlePause)
	return v, err == nil
}

// IdleStopDuration is the document's idleStop; ok false when it sets none.
func (d Document) IdleStopDuration() (time.Duration, bool) {
	if d.IdleStop == nil {
		return 0, false
	}
	v, err := time.ParseDuration(*d.IdleStop)
	return v, err == nil
}

// Stored is a document with the generation it was written as.
type Stored struct {
	Generation int64    `json:"generation"`
	Settings   Document `json:"settings"`
}

// Put is what PUT /settings carries: a whole document and the generation
// it replaces.
type Put struct {
	Generation int64 `json:"generation"`
	Document
}

// putKeys are the keys a PUT body may have, and what each must be.
var putKeys = map[string]string{
	"generation":       "a number",
	"daemonJSON":       "an object (daemon.json)",
	"kubernetes":       "true or false",
	"proxy":            "an object {http, https, noProxy}",
	"trustedCAs":       "a list of PEM certificates",
	"idleStop":         `a duration such as "5m" ("0": never)`,
	"idlePause":        `a duration such as "30s" ("0": never)`,
	"hostNetworkPorts": "true or false",
}

// Invalid is a document refused before anything changed: the field and
// why. Its kind is errdefs' invalid argument.
type Invalid struct {
	Field, Reason string
}

func (e *Invalid) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap gives the error its kind.
func (e *Invalid) Unwrap() error { return errdefs.ErrInvalidArgument }

// ErrStale is a write that replaces a generation that is not the current;
// its kind is errdefs' conflict.
var ErrStale = fmt.Errorf("%w: the settings changed since they were read", errdefs.ErrConflict)

// Parse reads a PUT body: one JSON object, only known keys, each of its
// type, and no daemon.json key that ddinit owns (owned maps each such key
// to why).
func Parse(body []byte, owned map[string]string) (Put, error) {
	var p Put
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return p, &Invalid{Field: "(document)", Reason: fmt.Sprintf("not valid JSON at byte %d: %v", se.Offset, err)}
		}
		return p, &Invalid{Field: "(document)", Reason: "want a JSON object: " + err.Error()}
	}
	if dec.More() {
		return p, &Invalid{Field: "(document)", Reason: "more than one JSON value"}
	}
	if top == nil {
		return p, &Invalid{Field: "(document)", Reason: "want a JSON object, not null"}
	}
	for _, k := range slices.Sorted(maps.Keys(top)) {
		if _, ok := putKeys[k]; !ok {
			if k == "" {
				k = `""`
			}
			return p, &Invalid{Field: k, Reason: "not a setting (known: " + strings.Join(slices.Sorted(maps.Keys(putKeys)), ", ") + ")"}
		}
	}
	if err := json.Unmarshal(body, &p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := strings.TrimPrefix(te.Field, "Document.")
			want := putKeys[field]
			if want == "" {
				want = te.Type.String()
			}
			return p, &Invalid{Field: field, Reason: fmt.Sprintf("want %s, not %s", want, te.Value)}
		}
		return p, &Invalid{Field: "(document)", Reason: err.Error()}
	}
	if raw, ok := top["proxy"]; ok && string(raw) != "null" {
		// Strictly: a misspelt field must not pass as "no proxy".
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(new(Proxy)); err != nil {
			return p, &Invalid{Field: "proxy", Reason: "want " + putKeys["proxy"] + ": " + err.Error()}
		}
	}
	if err := validateEnvironment(p.Document); err != nil {
		return p, err
	}
	for field, v := range map[string]*string{"idleStop": p.IdleStop, "idlePause": p.IdlePause} {
		if v == nil {
			continue
		}
		if d, err := time.ParseDuration(*v); err != nil || d < 0 {
			return p, &Invalid{Field: field, Reason: fmt.Sprintf("want %s, not %q", putKeys[field], *v)}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(p.DaemonJSON)) {
		if why, ok := owned[k]; ok {
			return p, &Invalid{Field: "daemonJSON." + k, Reason: "ddinit sets it: " + why}
		}
	}
	return p, nil
}

// Next checks p against the stored generation and returns what to store.
func Next(cur Stored, p Put) (Stored, error) {
	if p.Generation != cur.Generation {
		return cur, fmt.Errorf("%w: this document replaces generation %d, the current one is %d (read it again)", ErrStale, p.Generation, cur.Generation)
	}
	return Stored{Generation: cur.Generation + 1, Settings: p.Document}, nil
}

// DaemonJSON is the daemon.json dockerd gets: the user's object with the
// keys ddinit sets added (forced wins over the user's).
func DaemonJSON(user map[string]json.RawMessage, forced map[string]json.RawMessage) ([]byte, error) {
	out := map[string]json.RawMessage{}
	maps.Copy(out, user)
	maps.Copy(out, forced)
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("daemon.json: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseDaemonJSON reads a daemon.json: one JSON object. The error says
// why dockerd would refuse it as JSON.
func ParseDaemonJSON(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON at byte %d: %w", se.Offset, err)
		}
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if m == nil {
		return nil, errors.New("not a JSON object: null")
	}
	return m, nil
}

// Equal reports whether two daemon.json objects say the same.
func Equal(a, b map[string]json.RawMessage) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

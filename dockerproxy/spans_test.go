package dockerproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// The edits change a create body only where they edit: every other byte
// (key order, keys given twice, unknown fields, number formats, escapes,
// spacing) reaches dockerd as the client sent it.

// rule says how an edited body may differ from the one sent at a value.
type rule interface {
	check(in, out []byte, is, os span) error
}

// same: not one byte changed.
type same struct{}

func (same) check(in, out []byte, is, os span) error {
	if !bytes.Equal(in[is.start:is.end], out[os.start:os.end]) {
		return fmt.Errorf("%s became %s", in[is.start:is.end], out[os.start:os.end])
	}
	return nil
}

// anything: a value an edit sets whole (a bind's source).
type anything struct{}

func (anything) check(in, out []byte, is, os span) error { return nil }

// appended: a list whose elements are kept and may have more after them.
type appended struct{}

func (appended) check(in, out []byte, is, os span) error {
	if isNull(in, is) {
		return nil // an edit may set a list that was null
	}
	ie, oe := arrayElements(in, is), arrayElements(out, os)
	if len(oe) < len(ie) {
		return fmt.Errorf("%s lost elements: %s", in[is.start:is.end], out[os.start:os.end])
	}
	// Every byte up to the last element is as sent.
	upTo := is.start + 1
	if len(ie) > 0 {
		upTo = ie[len(ie)-1].end
	}
	if !bytes.Equal(in[is.start:upTo], out[os.start:os.start+upTo-is.start]) {
		return fmt.Errorf("%s became %s, not only added to", in[is.start:is.end], out[os.start:os.end])
	}
	return nil
}

// elementwise: a list of as many elements, each kept or set whole (a
// bind rewritten).
type elementwise struct{ each rule }

func (e elementwise) check(in, out []byte, is, os span) error {
	ie, oe := arrayElements(in, is), arrayElements(out, os)
	if len(ie) != len(oe) {
		return fmt.Errorf("%s became %s: not as many elements", in[is.start:is.end], out[os.start:os.end])
	}
	prevIn, prevOut := is.start, os.start
	for i := range ie {
		if !bytes.Equal(in[prevIn:ie[i].start], out[prevOut:oe[i].start]) {
			return fmt.Errorf("the bytes between %s's elements changed", in[is.start:is.end])
		}
		if err := e.each.check(in, out, ie[i], oe[i]); err != nil {
			return err
		}
		prevIn, prevOut = ie[i].end, oe[i].end
	}
	if !bytes.Equal(in[prevIn:is.end], out[prevOut:os.end]) {
		return fmt.Errorf("the end of %s changed", in[is.start:is.end])
	}
	return nil
}

// members: an object whose members are kept, in order, each time given,
// but those edits may change (by their rule) and those added at its end
// (names the edits may add, not given before).
type members struct {
	change map[string]rule // by field; struct fields match as dockerd matches keys
	exact  bool            // a map: keys match as sent
	add    []string
}

func (m members) ruleFor(key string) rule {
	for f, r := range m.change {
		if key == f || !m.exact && strings.EqualFold(key, f) {
			return r
		}
	}
	return same{}
}

func (m members) check(in, out []byte, is, os span) error {
	if isNull(in, is) && !isNull(out, os) {
		is = span{} // an edit may set an object that was null: all added
	}
	var im []member
	if is != (span{}) {
		if kindOf(in, is) != '{' {
			return same{}.check(in, out, is, os)
		}
		im = objectMembers(in, is)
	}
	om := objectMembers(out, os)
	if len(om) < len(im) {
		return fmt.Errorf("%s lost members: %s", in[is.start:is.end], out[os.start:os.end])
	}
	prevIn, prevOut := is.start, os.start
	for i := range im {
		if is == (span{}) {
			break
		}
		if !bytes.Equal(in[prevIn:im[i].value.start], out[prevOut:om[i].value.start]) {
			return fmt.Errorf("before %q: %q became %q", im[i].key, in[prevIn:im[i].value.start], out[prevOut:om[i].value.start])
		}
		if err := m.ruleFor(im[i].key).check(in, out, im[i].value, om[i].value); err != nil {
			return fmt.Errorf("%s: %w", im[i].key, err)
		}
		prevIn, prevOut = im[i].value.end, om[i].value.end
	}
	if is != (span{}) {
		// What followed the last member (spaces) is still there, before
		// anything added.
		tail := in[prevIn : is.end-1]
		if !bytes.HasPrefix(out[prevOut:], tail) {
			return fmt.Errorf("the end of %s changed", in[is.start:is.end])
		}
	}
	for _, added := range om[len(im):] {
		ok := false
		for _, name := range m.add {
			if added.key == name {
				ok = true
			}
		}
		for _, given := range im {
			if strings.EqualFold(given.key, added.key) && !m.exact || given.key == added.key {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("%q added to %s", added.key, in[is.start:is.end])
		}
	}
	return nil
}

// editable is what ddinit's edits may change in a body: for the host's
// fields, rules used at the top level too (a body without HostConfig,
// for an engine that reads them there).
func editable(label string) members {
	host := map[string]rule{
		"Binds":      elementwise{anything{}},
		"Mounts":     elementwise{members{change: map[string]rule{"Source": anything{}}, add: []string{"Source"}}},
		"ExtraHosts": appended{},
	}
	top := map[string]rule{
		"Env":    appended{},
		"Labels": members{exact: true, change: map[string]rule{label: anything{}}, add: []string{label}},
	}
	hc := members{change: host, add: []string{"ExtraHosts"}}
	top["HostConfig"] = hc
	for f, r := range host {
		top[f] = r
	}
	return members{change: top, add: []string{"Env", "Labels", "HostConfig", "ExtraHosts"}}
}

// checkOnlyEdited fails t when out differs from in anywhere the edits do
// not edit.
func checkOnlyEdited(t *testing.T, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("%s became invalid JSON: %s", in, out)
	}
	is := span{skipSpace(in, 0), valueEnd(in, skipSpace(in, 0))}
	os := span{skipSpace(out, 0), valueEnd(out, skipSpace(out, 0))}
	if !bytes.Equal(in[:is.start], out[:os.start]) || !bytes.Equal(in[is.end:], out[os.end:]) {
		t.Fatalf("the bytes around %s changed: %s", in, out)
	}
	if err := editable("io.test").check(in, out, is, os); err != nil {
		t.Fatalf("%s\nbecame\n%s\n%v", in, out, err)
	}
}

// FuzzEditCreate checks every edit ddinit makes, for both layouts of
// engine: what comes out is JSON, and differs from what came in only in
// the spans the edits edit.
func FuzzEditCreate(f *testing.F) {
	for _, b := range []string{
		`{"Image":"x","privileged":true,"Privileged":false,"ExposedPorts":{"80/tcp":{}},"ExposedPorts":{"81/tcp":{}},"HostConfig":{"Dns":["1.1.1.1"],"Binds":["C:\\x:/x"]}}`,
		`{"Image":"x","Privileged":true,"PortBindings":{"80/tcp":[{"HostPort":"8080"}]},"RestartPolicy":{"Name":"always"},"Dns":["1.1.1.1"]}`,
		`{ "Env" : [ "A=1" ] , "Labels" : { "a" : "1" , "a" : "2" } , "Memory" : 1e3 , "HostConfig" : null }`,
		`{"HostConfig":{"Mounts":[{"Type":"bind","Source":"C:/y","Target":"/y","Target":"/z"},null]}}`,
		`{}`,
		`{"Env":[],"Labels":{},"HostConfig":{}}`,
		`{"Env":null,"Labels":null,"HostConfig":{"ExtraHosts":null,"Dns":["1.1.1.1"]},"N":-0.0e-0}`,
	} {
		f.Add([]byte(b), true)
		f.Add([]byte(b), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, atTop bool) {
		layout := HostInHostConfig
		if atTop {
			layout = HostAtTop
		}
		edits := everyEdit(new([]string))
		edits[3] = AddHosts(func() map[string]string {
			return map[string]string{"host.docker.internal": "172.20.0.1", "gateway.docker.internal": "100.64.249.1"}
		}, func(*Create) (bool, error) { return true, nil })
		out, err := EditCreate(body, layout, edits...)
		if err != nil {
			return
		}
		checkOnlyEdited(t, body, out)
	})
}

// The cases the issue names, and the bytes they keep.
func TestEditsKeepEveryByteTheyDoNotEdit(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		layout     HostLayout
		want       []string // in what is sent, as sent
	}{
		{"host settings at the top level, 20.10",
			`{"Image":"x","Privileged":true,"PortBindings":{"80/tcp":[{"HostPort":"8080"}]},"RestartPolicy":{"Name":"always"}}`,
			HostAtTop, []string{`"Privileged":true,"PortBindings":{"80/tcp":[{"HostPort":"8080"}]},"RestartPolicy":{"Name":"always"}`, `"ExtraHosts":[`}},
		{"host settings at the top level, 28",
			`{"Image":"x","Privileged":true}`,
			HostInHostConfig, []string{`"Privileged":true`, `"HostConfig":{"ExtraHosts":[`}},
		{"privileged twice",
			`{"Image":"x","privileged":true,"Privileged":false,"HostConfig":{"Privileged":true,"privileged":false}}`,
			HostAtTop, []string{`"privileged":true,"Privileged":false`, `"Privileged":true,"privileged":false,"ExtraHosts":[`}},
		{"ExposedPorts twice",
			`{"ExposedPorts":{"80/tcp":{}},"Env":["A=1"],"ExposedPorts":{"81/tcp":{}},"HostConfig":{}}`,
			HostInHostConfig, []string{`{"ExposedPorts":{"80/tcp":{}},"Env":["A=1","HTTP_PROXY=`, `"ExposedPorts":{"81/tcp":{}},"HostConfig":{"ExtraHosts":[`}},
		{"numbers and escapes",
			`{"Memory":1E3,"Name":"\u0041","Env":["\u0042=1"],"HostConfig":{"CpuShares":0.5e1}}`,
			HostAtTop, []string{`"Memory":1E3,"Name":"\u0041","Env":["\u0042=1",`, `"CpuShares":0.5e1,"ExtraHosts"`}},
		{"HostConfig null, 28",
			`{"Image":"x","HostConfig":null,"Privileged":true}`,
			HostInHostConfig, []string{`"HostConfig":{"ExtraHosts":[`, `,"Privileged":true`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edits := everyEdit(new([]string))
			edits[3] = AddHosts(func() map[string]string { return map[string]string{"host.docker.internal": "172.20.0.1"} },
				func(*Create) (bool, error) { return true, nil })
			out, err := EditCreate([]byte(tc.body), tc.layout, edits...)
			if err != nil {
				t.Fatal(err)
			}
			checkOnlyEdited(t, []byte(tc.body), out)
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s is not in\n%s", w, out)
				}
			}
		})
	}
}

// dockerd 20.10, given a HostConfig, reads no host setting at the top
// level: edits that add to a body without one add at the top level, so
// that what the client gave there is still read. Read as dockerd 20.10
// reads a body (dockerdView embeds the host's fields).
func TestHostEditsGoWhereTheEngineReadsThem(t *testing.T) {
	body := `{"Image":"x","Privileged":true,"Dns":["10.0.0.53"],"Binds":["C:\\src:/src"]}`
	var seen []string
	out, err := EditCreate([]byte(body), HostAtTop, everyEdit(&seen)...)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		dockerdView
		Privileged bool
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if v.HostConfig != nil || !v.Privileged || len(v.host().ExtraHosts) != 2 || v.host().Binds[0] != "/run/desktop/mnt/host/c/src:/src" {
		t.Fatalf("20.10 reads %s as %+v", out, v)
	}
	// An engine that reads no host field at the top level reads none of
	// these: it is not asked to bind or resolve what it will not see.
	seen = nil
	out, err = EditCreate([]byte(body), HostInHostConfig, everyEdit(&seen)...)
	if err != nil || strings.Contains(string(out), "HostConfig") || strings.Contains(string(out), "ExtraHosts") ||
		!strings.HasPrefix(string(out), strings.TrimSuffix(body, "}")) || len(seen) != 0 {
		t.Fatalf("for dockerd 28: %s %v, sources asked %q", out, err, seen)
	}
}

// The engine is asked how it reads a body only when an edit needs it,
// and an engine that cannot be asked is the engine's failure, not the
// client's.
func TestLayoutAskedOnlyWhenNeeded(t *testing.T) {
	asked := 0
	layout := func() (bool, error) { asked++; return false, fmt.Errorf("engine gone") }
	body := `{"Image":"x","HostConfig":{"Binds":["C:\\x:/x"]}}`
	if _, err := EditCreate([]byte(body), layout, everyEdit(new([]string))...); err != nil || asked != 0 {
		t.Fatalf("a body with a HostConfig: %v, asked %d times", err, asked)
	}
	_, err := EditCreate([]byte(`{"Image":"x","Binds":["C:\\x:/x"]}`), layout, everyEdit(new([]string))...)
	var engineErr *EngineError
	if !errorsAs(err, &engineErr) || asked != 1 {
		t.Fatalf("a body with its binds at the top level: %v, asked %d times", err, asked)
	}
}

func TestReadsHostAtTop(t *testing.T) {
	for v, want := range map[string]bool{"1.41": true, "1.45": true, "1.46": false, "1.51": false, "2.0": false, "0.9": true} {
		if got, err := readsHostAtTop(v); err != nil || got != want {
			t.Errorf("%s: %v %v", v, got, err)
		}
	}
	for _, v := range []string{"", "1", "v1.41", "1.x", "1.-1"} {
		if _, err := readsHostAtTop(v); err == nil {
			t.Errorf("%q was read", v)
		}
	}
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// The proxy asks the engine behind it which API it speaks, and edits a
// body without a HostConfig where that engine reads it: what reaches
// dockerd 20.10 (API 1.41) keeps its host settings at the top level, what
// reaches dockerd 28 (1.51) gets a HostConfig.
func TestProxyAsksTheEngineWhereHostSettingsGo(t *testing.T) {
	for api, want := range map[string]string{
		"1.41": `{"Image":"x","Privileged":true,"ExtraHosts":["host.docker.internal:172.20.0.1"]}`,
		"1.51": `{"Image":"x","Privileged":true,"HostConfig":{"ExtraHosts":["host.docker.internal:172.20.0.1"]}}`,
	} {
		t.Run(api, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "engine.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			received := make(chan string, 1)
			mux := http.NewServeMux()
			mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Api-Version", api)
				io.WriteString(w, "OK")
			})
			mux.HandleFunc("POST /{version}/containers/create", func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				received <- string(b)
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, `{"Id":"c1"}`)
			})
			srv := &http.Server{Handler: mux}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })
			quiet := logrus.New()
			quiet.Out = io.Discard
			p := &Proxy{
				Dial: func(ctx context.Context) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", sock)
				},
				Edits: []CreateEdit{AddHosts(func() map[string]string { return map[string]string{"host.docker.internal": "172.20.0.1"} },
					func(*Create) (bool, error) { return true, nil })},
				Log: quiet,
			}
			psock := filepath.Join(t.TempDir(), "proxy.sock")
			pl, err := net.Listen("unix", psock)
			if err != nil {
				t.Fatal(err)
			}
			go p.Serve(pl)
			t.Cleanup(func() { pl.Close() })
			c := dialUnix(t, psock)
			body := `{"Image":"x","Privileged":true}`
			fmt.Fprintf(c, "POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "POST"})
			if err != nil || resp.StatusCode != http.StatusCreated {
				t.Fatalf("%v %v", resp, err)
			}
			if got := <-received; got != want {
				t.Fatalf("the engine received\n%s\nwant\n%s", got, want)
			}
		})
	}
}

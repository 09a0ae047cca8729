package services

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeDef(t *testing.T, dir, name, body string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, name), 0o755)
	if err := os.WriteFile(filepath.Join(dir, name, "config.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func spec(args, annotations string) string {
	return `{"ociVersion":"1.0.2","process":{"args":` + args + `,"cwd":"/"},"root":{"path":"/"},"annotations":{` + annotations + `}}`
}

func TestVersionPackDefinitionsLoad(t *testing.T) {
	defs, err := LoadDefinitions(filepath.Join("..", "distro", "pack", "containers", "services"))
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) != 1 || defs[0].Name != "dockerd" || defs[0].Ready == nil || defs[0].Socket != "/run/docker.sock" || !defs[0].Required {
		t.Fatalf("dockerd definition: %+v", defs)
	}
}

func TestDefinitionErrors(t *testing.T) {
	dir := t.TempDir()
	writeDef(t, dir, "broken", "{\n\"ociVersion\": \"1.0.2\",\n\"process\": {\n")
	_, err := LoadDefinitions(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "broken", "config.json")) || !strings.Contains(err.Error(), "not a valid OCI runtime spec") {
		t.Fatalf("invalid JSON: %v", err)
	}
	dir = t.TempDir()
	writeDef(t, dir, "a", spec(`["/a"]`, `"io.ddinit.service.depends-on":"b"`))
	writeDef(t, dir, "b", spec(`["/b"]`, `"io.ddinit.service.depends-on":"a"`))
	if _, err := LoadDefinitions(dir); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle: %v", err)
	}
	dir = t.TempDir()
	writeDef(t, dir, "a", spec(`["/a"]`, `"io.ddinit.service.depends-on":"ghost"`))
	if _, err := LoadDefinitions(dir); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("unknown dependency: %v", err)
	}
	dir = t.TempDir()
	writeDef(t, dir, "a", spec(`[]`, ``))
	if _, err := LoadDefinitions(dir); err == nil || !strings.Contains(err.Error(), "process.args") {
		t.Fatalf("no args: %v", err)
	}
	dir = t.TempDir()
	writeDef(t, dir, "a", spec(`["/a"]`, `"io.ddinit.service.ready":"tcp://x"`))
	if _, err := LoadDefinitions(dir); err == nil || !strings.Contains(err.Error(), "ready") {
		t.Fatalf("bad probe: %v", err)
	}
}

func TestStartOrderFollowsDependencies(t *testing.T) {
	dir := t.TempDir()
	writeDef(t, dir, "kubelet", spec(`["/k"]`, `"io.ddinit.service.depends-on":"dockerd"`))
	writeDef(t, dir, "dockerd", spec(`["/d"]`, ``))
	writeDef(t, dir, "aaa", spec(`["/a"]`, `"io.ddinit.service.depends-on":"kubelet, containerd"`))
	defs, err := LoadDefinitions(dir)
	if err != nil {
		t.Fatal(err)
	}
	ordered, _ := StartOrder(defs)
	var names []string
	for _, d := range ordered {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != "dockerd,kubelet,aaa" {
		t.Fatalf("order %v", names)
	}
}

func TestBackoffDoublesToItsCap(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w {
			t.Fatalf("delay %d = %v, want %v", i+1, got, w)
		}
	}
	if got := b.Delay(50); got != 30*time.Second {
		t.Fatalf("delay 50 = %v", got)
	}
}

func TestParseProbe(t *testing.T) {
	p, err := ParseProbe("http+unix:///run/docker.sock:/_ping")
	if err != nil || p.Socket != "/run/docker.sock" || p.Path != "/_ping" {
		t.Fatalf("%+v %v", p, err)
	}
	p, err = ParseProbe("unix:///run/x.sock")
	if err != nil || p.Socket != "/run/x.sock" || p.Path != "" {
		t.Fatalf("%+v %v", p, err)
	}
}

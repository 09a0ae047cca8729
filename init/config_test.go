package initd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDistroConfigLoads(t *testing.T) {
	c, err := LoadConfigFile(filepath.Join("..", "distro", "wsl", "etc", "ddinit", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Expose["docker"]) == 0 || c.DataDir != DefaultDataDir || len(c.Control) == 0 {
		t.Fatalf("distro config: %+v", c)
	}
}

func TestConfigFileErrorsNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.json")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	if _, err := LoadConfigFile(write(`{"dataDirr": "/x"}`)); err == nil || !strings.Contains(err.Error(), "dataDirr") {
		t.Fatalf("typo in a field: %v", err)
	}
	c, err := LoadConfigFile(write(`{"restart": {"initial": "10ms", "max": "1s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.RestartPolicy(); b.Initial != 10*time.Millisecond || b.Max != time.Second || b.ResetAfter != time.Minute {
		t.Fatalf("backoff %+v", b)
	}
	if _, err := LoadConfigFile(write(`{"restart": {"initial": 10}}`)); err == nil {
		t.Fatal("a number accepted as a duration")
	}
	for _, bad := range []Config{
		{Expose: map[string]Addrs{"docker": {"vsock://:50001"}}},
		{Expose: map[string]Addrs{"docker": {"unix:///ok.sock", "tcp://10.0.0.1:2375"}}},
		{Control: []string{"unix://relative.sock"}},
		{ImageMode: "fast"},
	} {
		bad.Defaults()
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

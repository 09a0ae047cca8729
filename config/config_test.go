package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// A --config path that names no file (a FIFO, a folder, a file far too
// large) is an error naming it, at once.
func TestConfigFileThatIsNoFile(t *testing.T) {
	dir := t.TempDir()
	fifo, huge := filepath.Join(dir, "fifo.json"), filepath.Join(dir, "huge.json")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(huge, nil, 0o644)
	os.Truncate(huge, 1<<40)
	for path, says := range map[string]string{fifo: "FIFO", dir: "directory", huge: "larger than"} {
		done := make(chan error, 1)
		go func() {
			_, err := LoadConfigFile(path)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), says) {
				t.Errorf("%s: %v, want it named as %q", path, err, says)
			}
		case <-time.After(time.Second):
			t.Fatalf("%s: LoadConfigFile has not returned after 1s", path)
		}
	}
}

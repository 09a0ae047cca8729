package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/ddinit/ddinit/control"
)

// settingsCommands are `ddinit settings get` and `ddinit settings set
// FILE|-`.
var settingsCommands = []command{
	{name: "get", summary: "print the settings in force: the document and its generation", setup: settingsGet},
	{name: "set", summary: `apply a settings document ({"daemonJSON": {…}, "kubernetes": true}; "-": stdin): validated, applied live, rolled back on failure`, args: "FILE|-", setup: settingsSet},
}

func settingsGet(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return copyAnswer(context.Background(), env.Stdout, *controlAddr, "/settings", false)
	}
}

func settingsSet(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	return func() error {
		if fs.NArg() != 1 {
			return fs.argCount("name one FILE, or - for stdin")
		}
		return setSettings(env, *controlAddr, fs.Arg(0))
	}
}

// setSettings puts a document; one without a generation replaces the
// current one.
func setSettings(env *Env, addr, file string) error {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("settings %s: not a JSON object: %w", file, err)
	}
	if _, ok := doc["generation"]; !ok {
		c, err := dial(addr, 10*time.Second)
		if err != nil {
			return err
		}
		cur, err := c.Settings(context.Background())
		if err != nil {
			return notRunning(c, err)
		}
		doc["generation"], _ = json.Marshal(cur.Generation)
		b, _ = json.Marshal(doc)
	}
	c, err := dial(addr, 5*time.Minute)
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodPut, "http://ddinit/settings", bytes.NewReader(b))
	resp, err := c.HTTP().Do(req)
	if err != nil {
		return notRunning(c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("settings not applied: %w", control.ResponseError(resp))
	}
	_, err = io.Copy(env.Stdout, resp.Body)
	return err
}

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/ddinit/ddinit/control"
	"io"
	"net/http"
	"os"
	"time"
)

// runSettings is `ddinit settings get` and `ddinit settings set FILE|-`.
func runSettings(env *Env, args []string) error {
	fs := newFlags(env, "settings", "settings get | settings set FILE|-")
	controlAddr := controlFlag(fs)
	// The subcommand may come before its flags (settings set --control
	// ADDR FILE) or after them (settings --control ADDR set FILE).
	var rest []string
	if len(args) > 0 && (args[0] == "get" || args[0] == "set") {
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		rest = append([]string{args[0]}, fs.Args()...)
	} else {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest = fs.Args()
	}
	switch {
	case len(rest) == 1 && rest[0] == "get":
		return copyAnswer(context.Background(), env.Stdout, *controlAddr, "/settings", false)
	case len(rest) == 2 && rest[0] == "set":
		return setSettings(env, *controlAddr, rest[1])
	}
	return usagef(`usage: ddinit settings get | ddinit settings set FILE|- (a document: {"daemonJSON": {…}, "kubernetes": true})`)
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

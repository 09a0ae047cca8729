package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/ddinit/ddinit/control"
)

// packCommands are `ddinit pack use PATH [--digest D] [--force] [--live]`
// and `ddinit pack rollback [--force] [--live]`: the version pack the next
// boot uses, or, live, the one the engine is replaced with now.
var packCommands = []command{
	{name: "use", summary: "choose a version pack, verified and cached; refused if its dockerd may be older than one that ran on the data store", args: "PATH", setup: packUse},
	{name: "rollback", summary: "choose the previous version pack again; refused if its dockerd may be older than one that ran on the data store", setup: packRollback},
}

func packUse(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	digest := fs.String("digest", "", "the pack's sha256 (default: its .sha256 beside it)")
	force := fs.Bool("force", false, "switch even to a dockerd older than one that ran on the data store, or one whose version (or the store's) cannot be read")
	live := fs.Bool("live", false, "switch now, without a reboot: clients are held while the engine is replaced")
	return func() error {
		if fs.NArg() != 1 {
			return fs.argCount("name one PATH, the pack image")
		}
		path, err := filepath.Abs(fs.Arg(0))
		if err != nil {
			return err
		}
		return choosePack(env, *controlAddr, control.UsePack{Path: path, Digest: *digest, Force: *force, Live: *live})
	}
}

func packRollback(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	force := fs.Bool("force", false, "roll back even to a dockerd older than one that ran on the data store, or one whose version (or the store's) cannot be read")
	live := fs.Bool("live", false, "switch now, without a reboot: clients are held while the engine is replaced")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return choosePack(env, *controlAddr, control.UsePack{Rollback: true, Force: *force, Live: *live})
	}
}

// choosePack asks the control API at addr for req, and, live, follows the
// switch to its end.
func choosePack(env *Env, addr string, req control.UsePack) error {
	c, err := dial(addr, 15*time.Minute) // a pack is copied and hashed
	if err != nil {
		return err
	}
	b, _ := json.Marshal(req) // plain fields always encode
	r, _ := http.NewRequest(http.MethodPut, "http://ddinit/version-pack", bytes.NewReader(b))
	resp, err := c.HTTP().Do(r)
	if err != nil {
		return notRunning(c, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("version pack not chosen: %w", control.ResponseError(resp))
	}
	var st control.PackState
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("version pack: %s", body)
	}
	printPacks(env.Stdout, &st)
	if !req.Live {
		fmt.Fprintln(env.Stdout, "it is used from the next boot (wsl --shutdown, or restart Docker Desktop)")
		return nil
	}
	fmt.Fprintln(env.Stdout, "switching now: clients are held until the new engine answers")
	return followSwitch(env, c, st)
}

// followSwitch waits for a live switch to end: the engine healthy again,
// on the pack asked for, or on the previous one (rolled back).
func followSwitch(env *Env, c *control.Client, asked control.PackState) error {
	start := time.Now()
	var from string
	if asked.Running != nil {
		from = asked.Running.Digest
	}
	want := asked.Next
	down := false
	for time.Since(start) < switchPatience {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.Do(ctx, http.MethodGet, "/ping", false)
		healthy := err == nil && resp.StatusCode == http.StatusOK
		if resp != nil {
			resp.Body.Close()
		}
		var st control.Status
		if healthy {
			st, err = c.Status(ctx)
			healthy = err == nil && st.Packs != nil && st.Packs.Running != nil
		}
		cancel()
		if !healthy {
			down = true
			time.Sleep(250 * time.Millisecond)
			continue
		}
		running := st.Packs.Running
		switch {
		case want != nil && running.Digest == want.Digest && (down || running.Digest != from):
			fmt.Fprintf(env.Stdout, "switched in %s: the engine runs on %s\n", time.Since(start).Round(100*time.Millisecond), running.Path)
			return nil
		case down:
			return fmt.Errorf("the switch did not bring the engine up and was rolled back to %s: %s", running.Path, st.Packs.LastFailure)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the engine is not healthy %s after the switch began: see `ddinit status` and `ddinit logs`", switchPatience)
}

// switchPatience bounds how long `pack use --live` waits for the switch.
const switchPatience = 5 * time.Minute

// printPacks is the version packs' lines of ddinit status.
func printPacks(w io.Writer, st *control.PackState) {
	if st == nil {
		return
	}
	line := func(what string, r *control.PackRef) {
		if r != nil {
			fmt.Fprintf(w, "version pack %s: %s (dockerd %s, %s)\n", what, r.Path, orUnknown(r.Engine), shortDigest(r.Digest))
		}
	}
	line("running", st.Running)
	if st.Next != nil && (st.Running == nil || st.Next.Digest != st.Running.Digest) {
		trial := ""
		if st.Trial {
			trial = ", on trial: rolled back if dockerd does not come up"
		}
		line("next boot"+trial, st.Next)
	}
	line("previous", st.Previous)
	if st.Warning != "" {
		fmt.Fprintln(w, st.Warning)
	}
	if st.LastFailure != "" {
		fmt.Fprintf(w, "version pack rolled back: %s\n", st.LastFailure)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "version unknown"
	}
	return s
}

func shortDigest(d string) string { return d[:min(12, len(d))] }

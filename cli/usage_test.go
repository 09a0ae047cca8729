package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// commandPaths are every command people use, as typed: "pack use".
func commandPaths() [][]string {
	var paths [][]string
	for _, c := range commands {
		paths = append(paths, []string{c.name})
		for _, s := range c.subs {
			paths = append(paths, []string{c.name, s.name})
		}
	}
	return paths
}

// Every command and subcommand answers --help and -h (wherever among its
// arguments) with its usage on stdout, whole lines, and exit 0; so do
// `ddinit help COMMAND…` and, for the list, `ddinit`, `ddinit help`.
func TestEveryCommandHasHelp(t *testing.T) {
	paths := commandPaths()
	have := map[string]bool{}
	for _, p := range paths {
		have[strings.Join(p, " ")] = true
	}
	for _, want := range []string{"run", "status", "logs", "restart", "pack", "pack use", "pack rollback", "settings", "settings get", "settings set", "stop", "diagnose", "enter", "probe", "proxy", "forward", "iso", "iso ls", "iso extract", "iso verify"} {
		if !have[want] {
			t.Errorf("no command %q", want)
		}
	}
	if have[pid1Command] {
		t.Errorf("PID 1's entry is listed for people")
	}
	for _, p := range paths {
		name := strings.Join(p, " ")
		variants := [][]string{
			append(append([]string{}, p...), "--help"),
			append(append([]string{}, p...), "-h"),
			append([]string{"help"}, p...),
		}
		if len(p) > 1 || find(commands, p[0]).subs == nil {
			// After an argument too (a group's first is its command).
			variants = append(variants, append(append([]string{}, p...), "ARG", "-help"))
		}
		for _, args := range variants {
			code, out, errOut := run(args...)
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "usage: ddinit "+name+" ") && !strings.HasPrefix(out, "usage: ddinit "+name+"\n") || !strings.HasSuffix(out, "\n") {
				t.Errorf("ddinit %s: exit %d, stdout %q, stderr %q; want its usage on stdout, exit 0", strings.Join(args, " "), code, out, errOut)
			}
		}
	}
	for _, args := range [][]string{{}, {"help"}, {"--help"}, {"-h"}} {
		code, out, errOut := run(args...)
		if code != 0 || errOut != "" || !strings.HasSuffix(out, "\n") {
			t.Errorf("ddinit %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
		}
		for _, c := range commands {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Errorf("ddinit %s does not list %s:\n%s", strings.Join(args, " "), c.name, out)
			}
		}
	}
}

// A mistake in the command line (an unknown command, subcommand or flag,
// a flag without its value, arguments missing or too many) is one line
// naming it on stderr, then the usage, and exit status 2.
func TestCommandLineMistakes(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string // in the first line
	}{
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"--bogus"}, "unknown flag --bogus"},
		{[]string{"help", "frob"}, `unknown command "frob"`},
		{[]string{"help", pid1Command}, `unknown command "init"`},
		{[]string{"pack"}, "name a command (use or rollback)"},
		{[]string{"pack", "frob"}, `unknown command "frob"`},
		{[]string{"iso", "mount", "x"}, `unknown command "mount" (want ls, extract or verify)`},
		{[]string{"settings", "--control", "get"}, "name a command"}, // get is --control's value
		{[]string{"status", "--bogus"}, "-bogus"},
		{[]string{"pack", "use", "x.iso", "--bogus"}, "-bogus"},
		{[]string{"iso", "ls", "--bogus", "x.iso"}, "-bogus"},
		{[]string{"pack", "use", "x.iso", "--digest"}, "flag needs an argument: --digest"},
		{[]string{"pack", "rollback", "--force=maybe"}, "-force"},
		{[]string{"restart"}, "name one SERVICE"},
		{[]string{"restart", "a", "b"}, "name one SERVICE"},
		{[]string{"pack", "use"}, "PATH"},
		{[]string{"pack", "rollback", "now"}, "takes no arguments"},
		{[]string{"iso", "extract", "x.iso"}, "IMAGE and a DIR"},
		{[]string{"settings", "set"}, "FILE"},
		{[]string{"status", "extra"}, "takes no arguments"},
		{[]string{"enter", "a", "b", "--", "sh"}, "at most one SERVICE"},
		{[]string{"forward", "--listen", "unix:///tmp/x.sock"}, "--to"},
		{[]string{"stop", "--timeout", "soon"}, "-timeout"},
	} {
		code, out, errOut := run(c.args...)
		first, rest, _ := strings.Cut(errOut, "\n")
		if code != 2 || out != "" || !strings.HasPrefix(first, "ddinit") || !strings.Contains(first, c.says) || !strings.Contains(rest, "usage: ddinit") || !strings.HasSuffix(errOut, "\n") {
			t.Errorf("ddinit %s: exit %d, stdout %q, stderr %q; want exit 2, %q and the usage on stderr", strings.Join(c.args, " "), code, out, errOut, c.says)
		}
	}
}

// Flags come before, between or after a command's arguments (and a
// group's subcommand): each is taken as the flag it is, for every command
// that has flags. A control address given anywhere is the one asked.
func TestFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	ctl := "unix://" + filepath.Join(dir, "nobody.sock")
	doc := filepath.Join(dir, "settings.json")
	os.WriteFile(doc, []byte(`{"generation": 1}`), 0o644)
	archive := filepath.Join(dir, "d.tgz")
	notRunning := "nothing answers on " + ctl
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"status", "--json", "--control", ctl}, 1, notRunning},
		{[]string{"logs", "dockerd", "-f", "-n", "5", "--control", ctl}, 1, notRunning},
		{[]string{"logs", "-n", "5", "dockerd", "--control=" + ctl}, 1, notRunning},
		{[]string{"restart", "dockerd", "--control", ctl}, 1, notRunning},
		{[]string{"pack", "use", "x.iso", "--force", "--live", "--digest", strings.Repeat("0", 64), "--control", ctl}, 1, notRunning},
		{[]string{"pack", "--control", ctl, "use", "--force", "x.iso"}, 1, notRunning},
		{[]string{"pack", "rollback", "--force", "--live", "--control", ctl}, 1, notRunning},
		{[]string{"pack", "--force", "rollback", "--control", ctl}, 1, notRunning},
		{[]string{"settings", "get", "--control", ctl}, 1, notRunning},
		{[]string{"settings", "--control", ctl, "get"}, 1, notRunning},
		{[]string{"settings", "set", doc, "--control", ctl}, 1, notRunning},
		{[]string{"stop", "--timeout", "1s", "--control", ctl}, 1, notRunning},
		{[]string{"diagnose", "-o", archive, "--control", ctl}, 1, notRunning},
		{[]string{"enter", "dockerd", "--control", ctl, "--", "ls", "--control", "not-this"}, 1, notRunning},
		{[]string{"probe", ctl, "--timeout", "100ms"}, 1, "unhealthy"},
		{[]string{"iso", "extract", filepath.Join(dir, "none.iso"), filepath.Join(dir, "out"), "--sync", "--workers", "2"}, 1, "none.iso"},
		{[]string{"iso", "--workers", "2", "extract", filepath.Join(dir, "none.iso"), filepath.Join(dir, "out")}, 1, "none.iso"},
		{[]string{"run", "--log-level", "debug", "--config", filepath.Join(dir, "none.json")}, 1, "none.json"},
		{[]string{"forward", "--to", "unix:///tmp/x.sock", "--listen", "bogus"}, 2, "--listen"},
		{[]string{"proxy", "--distro", "Ubuntu", "--log-level", "loud"}, 2, "--log-level"},
	} {
		code, _, errOut := run(c.args...)
		if code != c.code || !strings.Contains(errOut, c.says) {
			t.Errorf("ddinit %s: exit %d, %q; want exit %d saying %q", strings.Join(c.args, " "), code, errOut, c.code, c.says)
		}
	}
	if _, err := os.Stat(archive); err == nil {
		t.Error("diagnose wrote an archive with nothing to ask")
	}
}

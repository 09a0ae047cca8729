package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(env *Env, args []string) error
}

// Env is what a subcommand may touch: its output streams.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

var commands []command

func init() {
	commands = []command{
		{"run", "boot: verify the images, start PID 1 in new namespaces, supervise the engine", runRun},
		{"status", "the engine's health: services, restarts, last exits, images, boot phases", runStatus},
		{"logs", "a service's output, or ddinit's own log (-f to follow)", runLogs},
		{"restart", "restart a service", runRestart},
		{"pack", "the version pack the next boot uses: use PATH, or rollback", runPack},
		{"settings", "the frontend's settings document: get, or set FILE|- (validated, applied live, rolled back on failure)", runSettings},
		{"stop", "shut everything down cleanly", runStop},
		{"diagnose", "write a diagnostics archive (status, logs, mounts, processes, network, kernel log)", runDiagnose},
		{"enter", "a shell (or a command) inside the namespace, or inside a service", runEnter},
		{"probe", "health-check a control address the way the frontend does (exit 0 when healthy)", runProbe},
		{"proxy", "serve a WSL distro's docker socket, binding its paths for the engine (run in each integrated distro)", runProxy},
		{"forward", "bridge a listening address to another socket (the frontend's vsock proxy)", runForward},
		{"iso", "inspect, verify and extract ISO images (ls, extract, verify)", runISO},
		{"init", "", runInit}, // PID 1 of the namespaces `ddinit run` creates
	}
}

// Main runs ddinit with args (without the program name) and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	env := &Env{Stdout: stdout, Stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return exitStatus(stderr, c.run(env, args[1:]))
		}
	}
	fmt.Fprintf(stderr, "ddinit: unknown command %q (see ddinit --help)\n", args[0])
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: ddinit COMMAND [ARGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		if c.summary != "" {
			fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		}
	}
}

// exitCode is a status a command already reported on its own.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func exitStatus(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "ddinit: %s\n", oneLine(err.Error()))
		return 2
	}
	fmt.Fprintf(stderr, "ddinit: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(env *Env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: ddinit %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/ddinit/ddinit/wire"
)

var commands []command

func init() {
	commands = []command{
		{name: "run", summary: "boot: verify the images, start PID 1 in new namespaces, supervise the engine", setup: runRun},
		{name: "status", summary: "the engine's health: services, restarts, last exits, images, boot phases", setup: runStatus},
		{name: "logs", summary: "a service's output, or ddinit's own log (-f to follow)", args: "[SERVICE]", setup: runLogs},
		{name: "restart", summary: "restart a service", args: "SERVICE", setup: runRestart},
		{name: "pack", summary: "the version pack the next boot uses (--live: now): use PATH, or rollback", subs: packCommands},
		{name: "kubernetes", summary: "the Kubernetes cluster: reset", subs: kubernetesCommands},
		{name: "settings", summary: "the frontend's settings document: get, or set FILE|- (validated, applied live, rolled back on failure)", subs: settingsCommands},
		{name: "stop", summary: "shut everything down cleanly", setup: runStop},
		{name: "diagnose", summary: "write a diagnostics archive (status, logs, mounts, processes, network, kernel log)", setup: runDiagnose},
		{name: "enter", summary: "a shell (or a command) inside the namespace, or inside a service", args: "[SERVICE] [-- CMD...]", setup: runEnter},
		{name: "probe", summary: "health-check a control address the way the frontend does (exit 0 when healthy)", args: "ADDR", setup: runProbe},
		{name: "proxy", summary: "serve a WSL distro's docker socket, binding its paths for the engine (run in each integrated distro)", setup: runProxy},
		{name: "forward", summary: "bridge a listening address to another socket (the frontend's vsock proxy)", setup: runForward},
		{name: "iso", summary: "inspect, verify and extract ISO images (ls, extract, verify)", subs: isoCommands},
	}
}

// pid1Command is PID 1's entry in the namespaces `ddinit run` creates: not
// for people, listed nowhere, its arguments its own.
const pid1Command = wire.PID1Argument

// Main runs ddinit with args (without the program name) and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	env := &Env{Stdout: stdout, Stderr: stderr}
	if len(args) == 0 {
		printUsage(stdout)
		return 0
	}
	switch name := args[0]; {
	case name == pid1Command:
		return exitStatus(stderr, runInit(env, args[1:]))
	case name == "help" && len(args) > 1:
		// ddinit help pack use: ddinit pack use --help.
		if find(commands, args[1]) == nil {
			return exitStatus(stderr, usageError{msg: fmt.Sprintf("unknown command %q", args[1]), cmd: "help", usage: usageText()})
		}
		return Main(append(append([]string{}, args[1:]...), "--help"), stdout, stderr)
	case name == "help" || isHelp(name):
		printUsage(stdout)
		return 0
	case strings.HasPrefix(name, "-"):
		return exitStatus(stderr, usageError{msg: fmt.Sprintf("unknown flag %s: name a command first", name), usage: usageText()})
	}
	c := find(commands, args[0])
	if c == nil {
		return exitStatus(stderr, usageError{msg: fmt.Sprintf("unknown command %q", args[0]), usage: usageText()})
	}
	return exitStatus(stderr, c.exec(env, c.name, args[1:]))
}

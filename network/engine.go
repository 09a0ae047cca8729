package network

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Starter starts a command and delivers its exit status: PID 1's reaper,
// the only one that may wait for its children.
type Starter interface {
	Start(cmd *exec.Cmd) (<-chan unix.WaitStatus, error)
}

// dockerBridge is a bridge dockerd makes: its default one and a user
// network's (br- and the network's ID's first 12 hex digits).
var dockerBridge = regexp.MustCompile(`^(docker0|br-[0-9a-f]{12})$`)

// ClearEngine leaves the engine's network namespace as a boot gives it to
// dockerd, but for what is not dockerd's own: it removes the bridges
// dockerd made and its chains and rules (DOCKER and every DOCKER-…, the
// jumps to them, the rules naming its bridges: 28's raw-table drops too), and keeps everything else
// — DOCKER-USER, the chain Docker leaves to its users, and its rules
// among it. It is for a dockerd stopped with no container running: dockerd
// makes all of it again from its own store when it starts, and a start on
// what it left takes longer (it deletes each rule it finds, one iptables
// call at a time). It runs in PID 1's network namespace with the version
// pack's iptables, through start; it never touches the distro's.
func ClearEngine(start Starter) error {
	return clear(start, func(name string) bool { return dockerBridge.MatchString(name) }, WithoutDockerRules)
}

// ClearCluster removes what a Kubernetes cluster switched off leaves in
// PID 1's network namespace: the pods' bridge (cni0), kube-proxy's chains
// (KUBE-…) and the CNI plugins' (CNI-…), the jumps to them and the rules
// naming the bridge. The pods' own namespaces go with their files
// (kube.Clear). Docker's rules stay as they are.
func ClearCluster(start Starter) error {
	return clear(start, func(name string) bool { return name == clusterBridge }, WithoutClusterRules)
}

// clusterBridge is the pods' bridge (the CNI network's).
const clusterBridge = "cni0"

// clusterChain is a chain of kube-proxy's or a CNI plugin's.
var clusterChain = regexp.MustCompile(`^(KUBE|CNI)-[A-Za-z0-9_-]+$`)

// WithoutClusterRules is an iptables-save dump without the cluster's
// chains and rules (ClearCluster).
func WithoutClusterRules(saved string) string {
	return withoutRules(saved, clusterChain.MatchString, func(name string) bool { return name == clusterBridge })
}

// clear removes the bridges isBridge names and what without leaves out
// of each family's rules.
func clear(start Starter, isBridge func(string) bool, without func(string) string) error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if name := l.Attrs().Name; l.Type() == "bridge" && isBridge(name) {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			}
		}
	}
	for _, family := range []string{"iptables", "ip6tables"} {
		saved, err := runReaped(start, family+"-save", "")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		kept := without(saved)
		if kept == saved {
			continue
		}
		if _, err := runReaped(start, family+"-restore", kept); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dockerChain is a chain dockerd makes and fills: DOCKER, and every
// DOCKER-… but DOCKER-USER (20.10's ISOLATION stages; 28's FORWARD,
// BRIDGE, CT and INTERNAL among them: Docker keeps the prefix for its
// own).
var dockerChain = regexp.MustCompile(`^DOCKER(-[A-Z0-9-]+)?$`)

// isDockerChain reports a chain of dockerd's own (not DOCKER-USER).
func isDockerChain(name string) bool { return name != "DOCKER-USER" && dockerChain.MatchString(name) }

// WithoutDockerRules is an iptables-save dump without dockerd's chains and
// rules: the chains dockerChain names, every rule in them or jumping to
// them, and every rule naming one of its bridges. The rest is kept as it
// is, DOCKER-USER among it.
func WithoutDockerRules(saved string) string {
	return withoutRules(saved, isDockerChain, dockerBridge.MatchString)
}

// withoutRules is a dump without the chains isChain names, every rule in
// them or jumping to them, and every rule naming a bridge isBridge names.
func withoutRules(saved string, isChain, isBridge func(string) bool) string {
	var out []string
	for _, line := range strings.Split(saved, "\n") {
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, ":") && len(fields) > 0 && isChain(strings.TrimPrefix(fields[0], ":")):
			continue
		case strings.HasPrefix(line, "-A ") && ruleOf(fields, isChain, isBridge):
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func ruleOf(fields []string, isChain, isBridge func(string) bool) bool {
	if len(fields) > 1 && isChain(fields[1]) {
		return true
	}
	for i := 2; i+1 < len(fields); i++ {
		switch fields[i] {
		case "-j", "-g":
			if isChain(fields[i+1]) {
				return true
			}
		case "-i", "-o":
			if isBridge(fields[i+1]) {
				return true
			}
		}
	}
	return false
}

// runReaped runs one of the pack's iptables tools with args and input on
// its stdin and returns what it wrote. Its streams are files, as the
// reaper needs.
func runReaped(start Starter, tool, input string, args ...string) (string, error) {
	stdin, err := os.CreateTemp("", "ddinit-"+tool+"-in-*")
	if err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	defer os.Remove(stdin.Name())
	defer stdin.Close()
	stdout, err := os.CreateTemp("", "ddinit-"+tool+"-out-*")
	if err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	if _, err := io.WriteString(stdin, input); err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	stdin.Seek(0, io.SeekStart)
	cmd := exec.Command(tool, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stdout
	exited, err := start.Start(cmd)
	if err != nil {
		return "", fmt.Errorf("%s: %w", tool, err)
	}
	ws := <-exited
	b, _ := os.ReadFile(stdout.Name())
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return "", fmt.Errorf("%s: exit status %d: %s", tool, ws.ExitStatus(), strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

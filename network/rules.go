package network

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// Tools makes a command for one of the version pack's iptables tools
// ("iptables-save", "ip6tables-restore", …) that runs in the distro's
// network namespace.
type Tools func(name string, args ...string) *exec.Cmd

// natRules masquerade a subnet's traffic and accept its forwarding, each
// rule tagged so that a person reading the tables sees whose it is. A rule
// is its table, its chain and its match and target.
func natRules(subnet string) [][]string {
	comment := []string{"-m", "comment", "--comment", ruleTag}
	return [][]string{
		append([]string{"nat", "POSTROUTING", "-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"}, comment...),
		append([]string{"filter", "FORWARD", "-i", HostLink, "-j", "ACCEPT"}, comment...),
		append([]string{"filter", "FORWARD", "-o", HostLink, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}, comment...),
	}
}

// insertRules puts rules first in their chains (ahead of a DROP another
// tool may have put there), and deletes the copies a crashed run left, in
// one iptables-restore transaction: two runs of the pack's tool per family
// instead of two per rule, on the boot's path, and never a moment with
// half of them in.
func insertRules(family string, tools Tools, rules [][]string) error {
	saved, err := runTool(tools, family+"-save", "")
	if err != nil {
		return err
	}
	script := rulesScript(saved, rules, true)
	if _, err := runTool(tools, family+"-restore", script, "--noflush"); err != nil {
		return err
	}
	return nil
}

// deleteRules removes every copy of rules, in one transaction.
func deleteRules(family string, tools Tools, rules [][]string) error {
	if len(rules) == 0 {
		return nil
	}
	saved, err := runTool(tools, family+"-save", "")
	if err != nil {
		return err
	}
	script := rulesScript(saved, rules, false)
	if script == "" {
		return nil
	}
	if _, err := runTool(tools, family+"-restore", script, "--noflush"); err != nil {
		return err
	}
	return nil
}

// rulesScript is the iptables-restore input that deletes every copy of
// rules found in saved (an iptables-save dump) and, if insert, inserts
// each rule first in its chain. A saved rule is a copy of one of ours when
// it is in the same table and chain and has the same words: the dump
// prints a rule's words in an order of its own ("-m comment" before
// "-j"). The deletions name the rule as the dump prints it, which the
// tool reads back exactly. "" when there is nothing to do.
func rulesScript(saved string, rules [][]string, insert bool) string {
	lines := map[string][]string{} // table → restore lines
	var tables []string
	add := func(table, line string) {
		if _, ok := lines[table]; !ok {
			tables = append(tables, table)
		}
		lines[table] = append(lines[table], line)
	}
	table := ""
	for _, line := range strings.Split(saved, "\n") {
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "*") && len(fields) == 1:
			table = strings.TrimPrefix(line, "*")
		case len(fields) > 2 && fields[0] == "-A":
			for _, r := range rules {
				if r[0] == table && r[1] == fields[1] && sameWords(r[2:], fields[2:]) {
					add(table, "-D "+strings.TrimPrefix(line, "-A "))
					break
				}
			}
		}
	}
	if insert {
		for _, r := range rules {
			add(r[0], "-I "+strings.Join(r[1:], " "))
		}
	}
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "*%s\n%s\nCOMMIT\n", t, strings.Join(lines[t], "\n"))
	}
	return b.String()
}

// sameWords reports whether a and b hold the same words, in any order.
func sameWords(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// runTool runs one of the pack's iptables tools with input on its stdin
// and returns what it wrote.
func runTool(tools Tools, name, input string, args ...string) (string, error) {
	if tools == nil {
		return "", fmt.Errorf("no %s to run", name)
	}
	cmd := tools(name, args...)
	cmd.Stdin = strings.NewReader(input)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		what := name
		if input != "" {
			what += " of\n" + input
		}
		return "", fmt.Errorf("%s: %v: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

package network

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"
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
// tool may have put there) and deletes the copies a crashed run left. Each
// table's part is one iptables-restore transaction: two runs of the pack's
// tool per family instead of two per rule, on the boot's path, and never a
// chain with half of its rules in. When that cannot be done (a rule of
// another tool's that the pack's iptables cannot print makes the dump
// fail; a copy gone between the dump and the restore), it is done one
// rule at a time, as robust as the tool itself. A table that went in
// before another failed stays: the caller's Close (deleteRules) removes
// whatever copies of rules are there.
func insertRules(family string, tools Tools, log logrus.FieldLogger, rules [][]string) error {
	err := restoreRules(family, tools, rules, true)
	if err == nil {
		return nil
	}
	log.WithError(err).Debug("the NAT rules in one transaction failed; one at a time")
	return insertEach(family, tools, rules)
}

// deleteRules removes every copy of rules, each table's in one
// transaction, or one at a time where that cannot be done.
func deleteRules(family string, tools Tools, log logrus.FieldLogger, rules [][]string) error {
	if len(rules) == 0 {
		return nil
	}
	err := restoreRules(family, tools, rules, false)
	if err == nil {
		return nil
	}
	log.WithError(err).Debug("removing the NAT rules in one transaction failed; one at a time")
	return deleteEach(family, tools, rules)
}

// restoreRules deletes every copy of rules found in the family's dump and,
// if insert, inserts each first in its chain, in one iptables-restore.
func restoreRules(family string, tools Tools, rules [][]string, insert bool) error {
	saved, err := runTool(tools, family+"-save", "")
	if err != nil {
		return err
	}
	script := rulesScript(saved, rules, insert)
	if script == "" {
		return nil
	}
	_, err = runTool(tools, family+"-restore", script, "--noflush")
	return err
}

// maxCopies bounds the copies of one rule removed one at a time.
const maxCopies = 16

// insertEach is insertRules one rule, and one copy, at a time.
func insertEach(family string, tools Tools, rules [][]string) error {
	for _, r := range rules {
		for i := 0; i < maxCopies && ruleCommand(family, tools, "-D", r) == nil; i++ {
		}
		if err := ruleCommand(family, tools, "-I", r); err != nil {
			return err
		}
	}
	return nil
}

// deleteEach is deleteRules one rule, and one copy, at a time, last first.
// A rule that is not there is no error (a part of them may never have gone
// in); a tool that fails otherwise is.
func deleteEach(family string, tools Tools, rules [][]string) error {
	var errs []error
	for i := len(rules) - 1; i >= 0; i-- {
		err := ruleCommand(family, tools, "-D", rules[i])
		if err != nil {
			// Not there is -C's status 1; anything else (there but not
			// deleted, a tool that does not run) is an error.
			var exit *exec.ExitError
			if cerr := ruleCommand(family, tools, "-C", rules[i]); !errors.As(cerr, &exit) || exit.ExitCode() != 1 {
				errs = append(errs, err)
			}
			continue
		}
		for j := 1; j < maxCopies && ruleCommand(family, tools, "-D", rules[i]) == nil; j++ {
		}
	}
	return errors.Join(errs...)
}

// ruleCommand runs `iptables -w -t TABLE OP CHAIN MATCH...` for rule r.
func ruleCommand(family string, tools Tools, op string, r []string) error {
	_, err := runTool(tools, family, "", append([]string{"-w", "-t", r[0], op, r[1]}, r[2:]...)...)
	return err
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
		what := strings.Join(append([]string{name}, args...), " ")
		if input != "" {
			// The tool's error names a line of it.
			what += " of\n" + input
		}
		return "", fmt.Errorf("%s: %w: %s", what, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

package network

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
)

// emptyRules are the filter and nat tables as a new network namespace
// has them: for iptables-restore, which replaces whole tables (their
// rules and their chains).
const emptyRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
`

// ClearEngine leaves the engine's namespace's network as a boot gives it
// to dockerd: it removes the bridges dockerd made (docker0, br-…) and
// empties the filter and nat tables (IPv4 and IPv6), which hold only
// dockerd's rules there. It is for a dockerd stopped with no container
// running: dockerd makes all of it again from its own store when it
// starts, and a start on what it left takes longer (it deletes each rule
// it finds, one iptables call at a time). It runs in PID 1's network
// namespace, with the version pack's iptables; it never touches the
// distro's.
func ClearEngine() error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() == "bridge" && (name == "docker0" || strings.HasPrefix(name, "br-")) {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			}
		}
	}
	for _, restore := range []string{"iptables-restore", "ip6tables-restore"} {
		cmd := exec.Command(restore)
		cmd.Stdin = strings.NewReader(emptyRules)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: %s", restore, err, strings.TrimSpace(out.String())))
		}
	}
	return errors.Join(errs...)
}

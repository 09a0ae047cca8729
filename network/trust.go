package network

import (
	"errors"
	"fmt"
	"net/netip"
)

// userChain is the chain dockerd jumps to from FORWARD before any rule of
// its own and leaves to its users: it makes it when it is missing and
// never empties it, and ClearEngine keeps it.
const userChain = "DOCKER-USER"

// TrustDistro lets the distro reach containers by their addresses: in
// PID 1's network namespace, at the top of DOCKER-USER, it accepts what
// the link brings from the distro's own end (from, its addresses on the
// link), so that dockerd's filtering of packets routed to its bridges
// from outside (20.10's FORWARD policy DROP, 28's DOCKER chain) does not
// drop the distros' connections; packets from anywhere else keep
// dockerd's filtering. Rules between dockerd's networks are dockerd's
// and stay in force: these name only the link. It runs before or after
// dockerd starts (dockerd adds its jump to DOCKER-USER and keeps what is
// in it) and is idempotent; each rule carries the comment ddinit. It runs
// with the version pack's iptables, through start.
func TrustDistro(start Starter, from []netip.Addr) error {
	var errs []error
	for _, a := range from {
		tool, bits := "iptables", 32
		if a.Is6() && !a.Is4In6() {
			tool, bits = "ip6tables", 128
		}
		rule := []string{userChain, "-i", InnerLink, "-s", netip.PrefixFrom(a.Unmap(), bits).String(), "-m", "comment", "--comment", ruleTag, "-j", "ACCEPT"}
		// Made here when dockerd has not yet: it keeps it as it finds it.
		runPackTool(start, tool, "-w", "-N", userChain)
		if runPackTool(start, tool, append([]string{"-w", "-C"}, rule...)...) == nil {
			continue
		}
		if err := runPackTool(start, tool, append([]string{"-w", "-I", userChain, "1"}, rule[1:]...)...); err != nil {
			errs = append(errs, fmt.Errorf("accept the distro's %s in %s: %w", a, userChain, err))
		}
	}
	return errors.Join(errs...)
}

// runPackTool runs one of the pack's iptables tools with args.
func runPackTool(start Starter, tool string, args ...string) error {
	_, err := runReaped(start, tool, "", args...)
	return err
}

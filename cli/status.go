package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/ddinit/ddinit/clitools"
	"github.com/ddinit/ddinit/config"
	"github.com/ddinit/ddinit/control"
	"github.com/ddinit/ddinit/timeline"
)

func runStatus(env *Env, fs *flags) func() error {
	controlAddr := controlFlag(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	shared := fs.String("wsl-shared", config.DefaultWSLShared, "the tmpfs all distros share, where each distro's proxy says what it linked")
	return func() error {
		if fs.NArg() > 0 {
			return fs.argCount("takes no arguments")
		}
		return status(env, *controlAddr, *shared, *asJSON)
	}
}

func status(env *Env, controlAddr, shared string, asJSON bool) error {
	st, err := fetchStatus(controlAddr)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(env.Stdout, st)
	printDistros(env.Stdout, shared)
	return nil
}

// printDistros lists the distros whose proxies said what they linked
// (their state files in the shared tmpfs), and the tools offered.
func printDistros(w io.Writer, shared string) {
	if m, err := clitools.ReadManifest(filepath.Join(shared, config.SharedCLITools, clitools.Current)); err == nil {
		fmt.Fprintf(w, "CLI tools offered to the distros: %s\n", printable(m.Summary()))
	}
	states, err := clitools.ReadStates(shared, config.SharedDistroStates)
	if err != nil {
		fmt.Fprintf(w, "distros: %v\n", err)
		return
	}
	for _, d := range states {
		// Every distro can write these files: nothing in them is printed
		// as a control sequence.
		line := "distro " + printable(d.Distro) + ": "
		if d.Err != "" {
			fmt.Fprintln(w, line+"unreadable state ("+printable(d.Err)+")")
			continue
		}
		var parts []string
		if len(d.Linked) > 0 {
			parts = append(parts, "linked "+printable(strings.Join(d.Linked, " ")))
		}
		for _, l := range d.LeftAlone {
			parts = append(parts, "its own "+printable(l.Tool)+" kept ("+printable(l.Path)+")")
		}
		if len(parts) == 0 {
			parts = append(parts, "no CLI tool linked")
		}
		if k := d.Kube; k != nil {
			parts = append(parts, kubeLine(k))
		}
		line += strings.Join(parts, "; ")
		if len(d.Linked)+len(d.LeftAlone) > 0 || d.Kube != nil {
			if !d.Checked.IsZero() {
				line += fmt.Sprintf(", checked %s ago", time.Since(d.Checked).Round(time.Second))
			}
		}
		fmt.Fprintln(w, line)
	}
}

// kubeLine says where the docker-desktop context is, or why it is not.
func kubeLine(k *clitools.KubeState) string {
	var s string
	switch {
	case k.Merged != "":
		s = "docker-desktop context in " + printable(k.File) + " (" + printable(k.User) + ")"
	case k.File != "":
		s = "docker-desktop context not in " + printable(k.File) + " (" + printable(k.User) + ")"
	default:
		s = "docker-desktop context not merged"
	}
	if !k.Offered {
		s += ", Kubernetes off"
	}
	if k.Error != "" {
		s += ": " + printable(k.Error)
	}
	return s
}

// printable is s with what a terminal would act on replaced.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}

func printStatus(w io.Writer, st control.Status) {
	health := "healthy"
	switch {
	case !st.Ready:
		health = "NOT READY: " + st.Reason
	case st.Reason != "":
		health += ", " + st.Reason // idle: stopped (idle) since …
	}
	fmt.Fprintf(w, "ddinit %s: %s, %s, up %s\n", st.Version, st.State, health, st.Uptime)
	if len(st.Phases) > 0 {
		var parts []string
		for _, p := range st.Phases {
			parts = append(parts, fmt.Sprintf("%s %.1fms", p.Name, p.DurationMs))
		}
		fmt.Fprintf(w, "boot: %s\n", strings.Join(parts, ", "))
	}
	printTimeline(w, "boot timeline", st.Timeline)
	printTimeline(w, "last wake", st.WakeTimeline)
	settingsLine := fmt.Sprintf("settings: generation %d", st.SettingsGeneration)
	if st.Applying != "" {
		settingsLine += ", applying: " + st.Applying
	}
	if st.SettingsError != "" {
		settingsLine += "; the last change failed: " + st.SettingsError
	}
	fmt.Fprintln(w, settingsLine)
	for _, r := range st.Recovered {
		fmt.Fprintf(w, "NOT USED at boot: %s\n", r)
	}
	c := st.Containerd
	fmt.Fprintf(w, "containerd: %s, pid %d, restarted %d times", c.State, c.PID, c.Restarts)
	if c.LastExit != nil {
		fmt.Fprintf(w, ", last exit %s", describeExit(c.LastExit))
	}
	if c.Reason != "" {
		fmt.Fprintf(w, " (%s)", c.Reason)
	}
	fmt.Fprintln(w)
	printServices(w, st)
	if k := st.Kubernetes; k != nil {
		fmt.Fprintf(w, "kubernetes: %s", printable(k.State))
		if k.Version != "" {
			fmt.Fprintf(w, " (%s)", printable(k.Version))
		}
		if k.On && k.NodeReady {
			fmt.Fprint(w, ", node Ready")
		}
		if k.Reason != "" {
			fmt.Fprintf(w, ": %s", printable(k.Reason))
		}
		fmt.Fprintln(w)
	}
	for _, im := range st.Images {
		how := "extracted"
		if im.Kernel {
			how = "kernel mount"
		}
		hit := "cache miss"
		if im.CacheHit {
			hit = "cache hit"
		}
		fmt.Fprintf(w, "image %s: sha256:%s (%s, %s) %s\n", im.Name, im.Digest, hit, how, im.Source)
	}
	var comps []string
	for _, c := range st.Components {
		comps = append(comps, c.Name+" "+c.Version)
	}
	if len(comps) > 0 {
		fmt.Fprintf(w, "components: %s\n", strings.Join(comps, ", "))
	}
	fmt.Fprintf(w, "data store: %s (%d MB free)\n", st.DataStore.Dir, st.DataStore.FreeBytes>>20)
	if n := st.Network; n != nil {
		if n.Error != "" {
			fmt.Fprintf(w, "network: %s\n", n.Error)
		} else {
			fmt.Fprintf(w, "network: %s %s, default via %s\n", n.Link, strings.Join(n.Addresses, " "), strings.Join(n.Gateways, " "))
		}
	}
	printDNS(w, st.DNS)
	printReach(w, st.Reach)
	printPacks(w, st.Packs)
}

// printReach is what the distros reach beyond published ports: each
// host-network listener and where it is served (or why not), each
// container network and whether it is routed (or why not).
func printReach(w io.Writer, r *control.Reach) {
	if r == nil {
		return
	}
	if r.Error != "" {
		fmt.Fprintf(w, "reach: %s\n", r.Error)
	}
	switch {
	case !r.HostPorts:
		fmt.Fprintln(w, "host-network ports: off (setting hostNetworkPorts)")
	case len(r.Listeners) == 0:
		fmt.Fprintln(w, "host-network ports: on, none listening")
	default:
		fmt.Fprintln(w, "host-network ports:")
		for _, l := range r.Listeners {
			who := l.Container
			if l.Name != "" {
				who = l.Name + " (" + l.Container + ")"
			}
			if l.Distro != "" {
				fmt.Fprintf(w, "  %s %s of %s: the distro's %s\n", l.Proto, l.Listen, printable(who), l.Distro)
			} else {
				fmt.Fprintf(w, "  %s %s of %s: not forwarded: %s\n", l.Proto, l.Listen, printable(who), printable(l.Reason))
			}
		}
	}
	if len(r.Routes) > 0 {
		fmt.Fprintln(w, "container networks:")
		for _, c := range r.Routes {
			if c.Routed {
				fmt.Fprintf(w, "  %s %s: routed via %s\n", printable(c.Network), c.Subnet, c.Via)
			} else {
				fmt.Fprintf(w, "  %s %s: not routed: %s\n", printable(c.Network), c.Subnet, printable(c.Reason))
			}
		}
	}
}

// printDNS is the DNS forwarder's line, and the last failure when there
// is one.
func printDNS(w io.Writer, d *control.DNSState) {
	if d == nil {
		return
	}
	switch {
	case d.Error != "" && len(d.Listen) == 0:
		fmt.Fprintf(w, "dns: %s\n", d.Error)
		return
	case d.Error != "":
		fmt.Fprintf(w, "dns: on %s: %s\n", strings.Join(d.Listen, " "), d.Error)
	default:
		fmt.Fprintf(w, "dns: on %s, forwarding to %s (%d answered, %d failed)\n", strings.Join(d.Listen, " "), strings.Join(d.Servers, " "), d.Answered, d.Failed)
	}
	if f := d.LastFailure; f != nil {
		fmt.Fprintf(w, "  last failure: %s %s ago: %s\n", f.Name, time.Since(f.At).Round(time.Second), f.Reason)
	}
}

// describeExit is a run's end in a few words: "SIGKILL after 31s (not
// answering for 30s)", "code 1 after 20ms", "start failed".
func describeExit(e *control.Exit) string {
	var s string
	switch {
	case e.Error != "":
		return "start failed"
	case e.Signal != "":
		s = fmt.Sprintf("%s after %s", e.Signal, e.Ran)
	default:
		s = fmt.Sprintf("code %d after %s", e.Code, e.Ran)
	}
	if e.Cause != "" {
		s += " (" + e.Cause + ")"
	}
	return s
}

// printServices is the services' table, and the last output of those
// that are not ready.
func printServices(w io.Writer, st control.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// A person in the distro signals the distro's pid; docker inspect and
	// the namespace's own tools give the other.
	fmt.Fprintln(tw, "SERVICE\tSTATE\tREADY\tRUNTIME\tPID\tDISTRO PID\tRESTARTS\tLAST EXIT\tREASON")
	for _, s := range st.Services {
		last := "-"
		if s.LastExit != nil {
			last = describeExit(s.LastExit)
		}
		pid, distroPID := "-", "-"
		if s.PID > 0 {
			pid = strconv.Itoa(s.PID)
			if p, err := hostPID(st.HostPID, s.PID); err == nil {
				distroPID = strconv.Itoa(p)
			}
		}
		runtime := s.Runtime
		if runtime == "" {
			runtime = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.State, s.Ready, runtime, pid, distroPID, s.Restarts, last, s.Reason)
	}
	tw.Flush()
	for _, s := range st.Services {
		if e := s.LastExit; e != nil && len(e.Output) > 0 && !s.Ready {
			fmt.Fprintf(w, "last output of %s:\n  %s\n", s.Name, strings.Join(e.Output, "\n  "))
		}
	}
}

// printTimeline prints a timeline as a table: each event's time since the
// first, and the step since the one before it.
func printTimeline(w io.Writer, title string, steps []timeline.Step) {
	if len(steps) == 0 {
		return
	}
	fmt.Fprintf(w, "%s (ms since %s; step: since the event before):\n", title, steps[0].Event)
	for _, s := range steps {
		fmt.Fprintf(w, "  %9.1f  %+8.1f  %s\n", s.AtMs, s.StepMs, s.Event)
	}
}

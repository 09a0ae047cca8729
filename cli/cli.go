package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// usageError marks a mistake in the command line (exit status 2): of the
// command cmd ("pack use"; "" for ddinit's own), and its usage, printed
// after it.
type usageError struct{ cmd, msg, usage string }

func (e usageError) Error() string {
	if e.cmd == "" {
		return e.msg
	}
	return e.cmd + ": " + e.msg
}

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// command is one of ddinit's commands, or of a group's (pack use).
type command struct {
	name    string
	summary string
	// args is the usage line's arguments after the flags: "PATH",
	// "[SERVICE] [-- CMD...]".
	args string
	// setup defines the command's flags and returns what it does once
	// they are parsed (fs.Args() are then its arguments).
	setup func(env *Env, fs *flags) func() error
	// subs are a group's commands: the first argument that is not a
	// flag names one, and the flags around it are its own.
	subs []command
}

// Env is what a subcommand may touch: its output streams.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
}

func find(cs []command, name string) *command {
	for i := range cs {
		if cs[i].name == name {
			return &cs[i]
		}
	}
	return nil
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "--h"
}

func usageText() string {
	var b strings.Builder
	b.WriteString("usage: ddinit COMMAND [flags] [ARGS]\n\ncommands:\n")
	listCommands(&b, commands)
	b.WriteString("\n`ddinit COMMAND --help` (or `ddinit help COMMAND`) describes one; flags may come\nbefore or after its arguments.\n")
	return b.String()
}

func printUsage(w io.Writer) { io.WriteString(w, usageText()) }

func listCommands(w io.Writer, cs []command) {
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}

// exec runs c, named path ("pack use"), with args: its flags parsed
// wherever they are, or, for a group, the command it names.
func (c *command) exec(env *Env, path string, args []string) error {
	if c.subs != nil {
		return c.execGroup(env, path, args)
	}
	fs := newFlags(env, path, c)
	act := c.setup(env, fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	err := act()
	var ue usageError
	if errors.As(err, &ue) && ue.usage == "" {
		return usageError{cmd: path, msg: ue.msg, usage: fs.usageText()}
	}
	return err
}

// execGroup finds the command a group's arguments name: the first that is
// not a flag (nor a flag's value, for any of the group's commands).
func (c *command) execGroup(env *Env, path string, args []string) error {
	var sets []*flags
	for i := range c.subs {
		fs := newFlags(env, path+" "+c.subs[i].name, &c.subs[i])
		c.subs[i].setup(env, fs)
		sets = append(sets, fs)
	}
	help := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			i = len(args)
		case !isFlag(a):
			sub := find(c.subs, a)
			if sub == nil {
				return usageError{cmd: path, msg: fmt.Sprintf("unknown command %q (want %s)", a, c.subNames()), usage: c.groupUsage(path)}
			}
			rest := append(append([]string{}, args[:i]...), args[i+1:]...)
			return sub.exec(env, path+" "+a, rest)
		case isHelp(a):
			help = true
		default:
			for _, fs := range sets {
				if fs.takesValue(a) {
					i++
					break
				}
			}
		}
	}
	if help {
		io.WriteString(env.Stdout, c.groupUsage(path))
		return flag.ErrHelp
	}
	return usageError{cmd: path, msg: fmt.Sprintf("name a command (%s)", c.subNames()), usage: c.groupUsage(path)}
}

func (c *command) subNames() string {
	var names []string
	for _, s := range c.subs {
		names = append(names, s.name)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func (c *command) groupUsage(path string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: ddinit %s COMMAND [flags] [ARGS]\n\n%s\n\ncommands:\n", path, c.summary)
	listCommands(&b, c.subs)
	fmt.Fprintf(&b, "\n`ddinit %s COMMAND --help` describes one.\n", path)
	return b.String()
}

// flags is a command's flag set: flags may come before, between or after
// its arguments; "--" ends them. -h or --help prints its usage on stdout.
type flags struct {
	*flag.FlagSet
	env *Env
	cmd *command
	// dashed is how many of Args() came after a "--".
	dashed int
}

func newFlags(env *Env, path string, c *command) *flags {
	fs := flag.NewFlagSet(path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed by parse
	fs.Usage = func() {}
	return &flags{FlagSet: fs, env: env, cmd: c}
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// takesValue reports whether a (-name or --name, without =value) is a flag
// of the set whose value is the next argument.
func (f *flags) takesValue(a string) bool {
	name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if strings.Contains(name, "=") {
		return false
	}
	fl := f.Lookup(name)
	if fl == nil {
		return false
	}
	b, ok := fl.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// parse reads args: the flags wherever they are, the rest as arguments in
// their order (Args()).
func (f *flags) parse(args []string) error {
	var flagArgs, positional []string
	f.dashed = 0
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			f.dashed = len(args) - i - 1
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case !isFlag(a):
			positional = append(positional, a)
		case f.takesValue(a) && i+1 == len(args):
			return f.usageError("flag needs an argument: %s", a)
		case f.takesValue(a):
			flagArgs = append(flagArgs, a, args[i+1])
			i++
		default:
			flagArgs = append(flagArgs, a)
		}
	}
	err := f.FlagSet.Parse(append(append(flagArgs, "--"), positional...))
	switch {
	case errors.Is(err, flag.ErrHelp):
		io.WriteString(f.env.Stdout, f.usageText())
		return flag.ErrHelp
	case err != nil:
		return f.usageError("%v", err)
	}
	return nil
}

// argCount is the usage error for arguments that are not what the command
// wants (want says what it wants).
func (f *flags) argCount(want string) error {
	if f.NArg() == 0 {
		return usagef("%s", want)
	}
	return usagef("%s (got %q)", want, f.Args())
}

// beforeDashes are the arguments given before a "--".
func (f *flags) beforeDashes() []string { return f.Args()[:f.NArg()-f.dashed] }

func (f *flags) usageError(format string, args ...any) error {
	return usageError{cmd: f.Name(), msg: fmt.Sprintf(format, args...), usage: f.usageText()}
}

// usageText is the command's usage: its line, what it does, its flags.
func (f *flags) usageText() string {
	var b strings.Builder
	hasFlags := false
	f.VisitAll(func(*flag.Flag) { hasFlags = true })
	b.WriteString("usage: ddinit " + f.Name())
	if hasFlags {
		b.WriteString(" [flags]")
	}
	if f.cmd.args != "" {
		b.WriteString(" " + f.cmd.args)
	}
	b.WriteString("\n")
	if f.cmd.summary != "" {
		b.WriteString("\n" + f.cmd.summary + "\n")
	}
	if hasFlags {
		b.WriteString("\nflags (before or after the arguments):\n")
		f.SetOutput(&b)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	return b.String()
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
		return 0 // the usage is printed on stdout
	}
	var ue usageError
	if errors.As(err, &ue) {
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "ddinit %s\n", oneLine(ue.Error()))
		} else {
			fmt.Fprintf(stderr, "ddinit: %s\n", oneLine(ue.Error()))
		}
		if ue.usage != "" {
			fmt.Fprintf(stderr, "\n%s", ue.usage)
		}
		return 2
	}
	fmt.Fprintf(stderr, "ddinit: %s\n", oneLine(err.Error()))
	return 1
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// Command l4lb is the l4lb node agent and its command-line client.
//
//	l4lb agent [flags]                 run the daemon on this node
//	l4lb register VIP BACKEND [flags]  publish a backend that runs on this node
//	l4lb deregister VIP BACKEND        withdraw it (it drains)
//	l4lb vips [FILTER] [-o wide|json]  show the VIPs, sorted, filtered, and the backends not serving
//	l4lb members [-o json]             show the cluster's nodes
//	l4lb leave                         make the agent leave the cluster for good and stop
//	l4lb keygen                        print a new gossip key
//	l4lb version                       print the version (also l4lb --version)
//	l4lb help [COMMAND]                the commands, or one command's flags
//
// This file and its siblings only parse flags and wire components; the logic
// lives in the packages they call.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name, args, summary string
	run                 func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"agent", "[flags]", "run the l4lb daemon on this node", runAgent},
		{"register", "VIP BACKEND [flags]", "publish a backend that runs on this node", runRegister},
		{"deregister", "VIP BACKEND [flags]", "withdraw a backend (it drains, then leaves)", runDeregister},
		{"vips", "[FILTER] [-o wide|json]", "show the VIPs sorted by name, and the backends not serving with why", runVIPs},
		{"members", "[-o json]", "show the cluster's nodes and their state", runMembers},
		{"leave", "[flags]", "make this node's agent leave the cluster for good and stop", runLeave},
		{"keygen", "", "print a new random gossip key (base64, 32 bytes)", runKeygen},
		{"version", "", "print l4lb's version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "l4lb: layer-4 load balancing to named VIPs with IPVS, gossip and DNS.\n\nUsage:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  l4lb %-10s %-22s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'l4lb COMMAND --help' for a command's flags.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error whose message was already printed with the usage.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch {
	case name == "-h" || name == "--help" || (name == "help" && len(args) == 1):
		usage(stdout)
		return 0
	case name == "help":
		// l4lb help CMD: the command's own help.
		return run([]string{args[1], "--help"}, stdout, stderr)
	case name == "--version" || name == "-version":
		name, args = "version", []string{"version"}
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "l4lb %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "l4lb: unknown command %q\n\n", name)
	usage(stderr)
	return 2
}

// parse parses flags that may stand before, between or after the positional
// arguments ("register VIP BACKEND --weight 2"), and checks how many
// positional arguments there are.
func parse(fs *flag.FlagSet, args []string, positional []string) ([]string, error) {
	var pos []string
	full := fs.Usage
	defer func() { fs.Usage = full }()
	for {
		// A bad flag gets the flag package's one line and a hint; the
		// whole usage is for --help.
		fs.Usage = func() {}
		err := fs.Parse(args)
		fs.Usage = full
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				full()
				return nil, err
			}
			fmt.Fprintf(fs.Output(), "Run 'l4lb %s --help' for its flags.\n", fs.Name())
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	required := 0
	for _, p := range positional {
		if !strings.HasPrefix(p, "[") {
			required++
		}
	}
	if len(pos) < required || len(pos) > len(positional) {
		want := "no arguments"
		if len(positional) > 0 {
			want = strings.Join(positional, " ")
		}
		fmt.Fprintf(fs.Output(), "l4lb %s: want %s, got %d argument(s)\n", fs.Name(), want, len(pos))
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

// newFlagSet makes a flag set whose usage names the command and its
// arguments.
func newFlagSet(name, args, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: l4lb %s %s\n\n%s.\n\nFlags:\n", name, args, summary)
		printFlags(fs)
	}
	return fs
}

// printFlags lists the flags as users write them: two dashes, or one for
// a one-letter flag (-o).
func printFlags(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		switch f.Value.(type) {
		case *durationValue:
			typ = "duration"
		case *apiAddr:
			typ = "address"
		}
		line := "  --" + f.Name
		if len(f.Name) == 1 {
			line = "  -" + f.Name
		}
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(fs.Output(), "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(fs.Output(), " (default %q)", f.DefValue)
		}
		fmt.Fprintln(fs.Output())
	})
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "", "print l4lb's version", stderr)
	if _, err := parse(fs, args, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "l4lb %s\n", version)
	return nil
}

// durationValue is a duration flag whose error says what a duration looks
// like.
type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like 5m or 30s")
	}
	*d = durationValue(v)
	return nil
}

// durationVar defines a duration flag with durationValue's error.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationValue)(p), name, usage)
}

// Command node is fedrank's command-line interface: `node sim` runs a
// simulated federation and reports on it; `node version` prints the build.
// DESIGN.md section 4 fixes the flags, the report files and the exit codes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// Exit codes (DESIGN.md section 4).
const (
	exitOK      = 0
	exitFailure = 1 // the run failed or was interrupted
	exitUsage   = 2 // bad usage or bad configuration
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands lists the subcommands for the usage message, in order.
var commands = []struct{ name, summary string }{
	{"sim", "run a simulated federation and report accuracy, traffic and time"},
	{"robustness", "run every aggregator against every attack and print the accuracy table"},
	{"version", "print the build's version and Go version"},
}

// run is the whole program short of os.Exit, so that tests can drive it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "sim":
		// The first Ctrl-C cancels the run, which then reports the rounds it
		// completed; once cancelled, a second Ctrl-C kills the process as usual.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		go func() { <-ctx.Done(); stop() }()
		return runSim(ctx, rest, stdout, stderr)
	case "robustness":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		go func() { <-ctx.Done(); stop() }()
		return runRobustness(ctx, rest, stdout, stderr)
	case "version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "node: unknown command %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: node <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'node <command> -h' for the flags of a command.")
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "node version: unexpected argument %q\n", args[0])
		return exitUsage
	}
	path, version := "github.com/fedrank/fedrank", "(unknown)"
	var vcs, rev, when, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path != "" {
			path = bi.Main.Path
		}
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs":
				vcs = s.Value
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
	}
	fmt.Fprintf(stdout, "node %s %s\n", path, version)
	fmt.Fprintf(stdout, "go   %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		fmt.Fprintf(stdout, "vcs  %s %s %s%s\n", vcs, rev, when, modified)
	}
	return exitOK
}

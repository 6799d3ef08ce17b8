// Command node is fedrank's command-line interface: `node sim` runs a
// simulated federation and reports on it; `node init`, `node genesis`,
// `node run`, `node status`, `node id`, `node export` and `node evaluate`
// set up, run and inspect a real peer (package daemon); `node version`
// prints the build. DESIGN.md sections 4 and 5 fix the flags, the report
// files and the exit codes.
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
	{"sweep", "run a grid of simulations from a sweep file, cached and summarised over seeds"},
	{"shard", "split the MNIST training set among peers as node sim does and write each share"},
	{"init", "create a peer's home: its key and config.toml"},
	{"genesis", "write a federation's genesis file and print its id (alias: federation new)"},
	{"run", "run the peer daemon until SIGINT or SIGTERM"},
	{"status", "print the peer's state: rounds, model, peers (running or stopped)"},
	{"id", "print the peer ID and, while the daemon runs, its listen multiaddrs"},
	{"export", "write a round's global model as a dense safetensors file"},
	{"evaluate", "score a dense safetensors model on the MNIST test set"},
	{"version", "print the build's version and Go version"},
}

// run is the whole program short of os.Exit, so that tests can drive it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	setDaemonVersion()
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
	case "sweep":
		return interruptible(func(ctx context.Context) int { return runSweepCmd(ctx, rest, stdout, stderr) })
	case "shard":
		return runShard(rest, stdout, stderr)
	case "init":
		return runInit(rest, stdout, stderr)
	case "genesis":
		return runGenesis("node genesis", rest, stdout, stderr)
	case "federation":
		if len(rest) == 0 || rest[0] != "new" {
			if len(rest) == 0 {
				fmt.Fprintln(stderr, "node federation: missing subcommand (have: new)")
			} else {
				fmt.Fprintf(stderr, "node federation: unknown subcommand %q (have: new)\n", rest[0])
			}
			return exitUsage
		}
		return runGenesis("node federation new", rest[1:], stdout, stderr)
	case "run":
		return interruptible(func(ctx context.Context) int { return runDaemon(ctx, rest, stdout, stderr) })
	case "status":
		return runStatus(rest, stdout, stderr)
	case "id":
		return runID(rest, stdout, stderr)
	case "export":
		return runExport(rest, stdout, stderr)
	case "evaluate":
		return runEvaluate(rest, stdout, stderr)
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
	path, ver := "github.com/fedrank/fedrank", "(unknown)"
	var vcs, rev, when, modified string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path != "" {
			path = bi.Main.Path
		}
		if bi.Main.Version != "" {
			ver = bi.Main.Version
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
	if version != "" {
		ver = version // stamped by scripts/build.sh
	}
	fmt.Fprintf(stdout, "node %s %s\n", path, ver)
	fmt.Fprintf(stdout, "go   %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		fmt.Fprintf(stdout, "vcs  %s %s %s%s\n", vcs, rev, when, modified)
	}
	return exitOK
}

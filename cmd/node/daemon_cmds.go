package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fedrank/fedrank/daemon"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/report"
)

// The daemon's commands (DESIGN.md section 5): init, run, status, id,
// export and evaluate are thin wrappers around package daemon; genesis is in
// genesis_cmd.go.

// cmdSpec describes a subcommand for its -h text and its error messages.
type cmdSpec struct {
	name     string   // "node init"
	synopsis string   // "node init --home DIR [flags]"
	about    []string // lines of description
	required []string // flags that must be given, without dashes
}

// newFlags returns a flag set that prints nothing itself: parseFlags words
// the errors and prints the flags for -h.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args for the command c. It returns the flags given on the
// command line and, when the command must stop there, the exit code: 0 after
// -h (the flags printed on stderr), 2 after a syntax error, an unexpected
// argument or a missing required flag (one line naming it on stderr).
func parseFlags(fs *flag.FlagSet, c cmdSpec, args []string, stderr io.Writer) (given map[string]bool, code int, stop bool) {
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if errors.Is(err, flag.ErrHelp) {
		cmdUsage(fs, c, stderr)
		return nil, exitOK, true
	}
	given = map[string]bool{}
	if err == nil {
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for _, name := range c.required {
			if !given[name] {
				err = fmt.Errorf("missing --%s", name)
				break
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for the flags.\n", c.name, err, c.name)
		return nil, exitUsage, true
	}
	return given, exitOK, false
}

// cmdUsage prints the -h text of a command, its flags with two dashes.
func cmdUsage(fs *flag.FlagSet, c cmdSpec, w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n", c.synopsis)
	if len(c.about) > 0 {
		fmt.Fprintln(w)
		for _, l := range c.about {
			fmt.Fprintln(w, l)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags:")
	fs.VisitAll(func(f *flag.Flag) {
		arg, help := flag.UnquoteUsage(f)
		if arg != "" {
			arg = " " + arg
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			help += " (default " + f.DefValue + ")"
		}
		if slices.Contains(c.required, f.Name) {
			help += " (required)"
		}
		fmt.Fprintf(w, "  --%s%s\n        %s\n", f.Name, arg, help)
	})
}

// usageErr prints a bad flag value and returns exit code 2.
func usageErr(stderr io.Writer, cmd, flagName, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: invalid --%s: %s\n", cmd, flagName, fmt.Sprintf(format, args...))
	return exitUsage
}

// failure prints a runtime error and returns exit code 1.
func failure(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
	return exitFailure
}

// checkHome checks that --home is an initialized home (it holds a key), so
// that a mistyped directory is reported as such rather than as a missing file
// deep inside.
func checkHome(home, cmd string, stderr io.Writer) (int, bool) {
	if home == "" {
		return usageErr(stderr, cmd, "home", `"" names no directory`), false
	}
	if _, err := os.Stat(filepath.Join(home, daemon.KeyFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return usageErr(stderr, cmd, "home", "%s holds no node key: run 'node init --home %s' first", home, home), false
		}
		return usageErr(stderr, cmd, "home", "%v", err), false
	}
	return exitOK, true
}

// checkMultiaddrs checks a comma-separated list of multiaddrs; withPeer
// requires each to end in /p2p/<peer ID>.
func checkMultiaddrs(list []string, withPeer bool) error {
	for _, s := range list {
		if withPeer {
			info, err := peer.AddrInfoFromString(s)
			if err != nil {
				return fmt.Errorf("%q: %v (want a multiaddr ending in /p2p/<peer ID>)", s, err)
			}
			if len(info.Addrs) == 0 {
				return fmt.Errorf("%q has no address to dial, only a peer ID", s)
			}
			continue
		}
		if _, err := ma.NewMultiaddr(s); err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
	}
	return nil
}

// interruptible runs f with a context cancelled by the first SIGINT or
// SIGTERM; once cancelled, a second signal kills the process as usual.
func interruptible(f func(ctx context.Context) int) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }()
	return f(ctx)
}

var versionOnce sync.Once

// setDaemonVersion makes the daemon announce this build's version.
func setDaemonVersion() {
	versionOnce.Do(func() { daemon.Version = buildVersion() })
}

// version is stamped by scripts/build.sh (-ldflags -X main.version=...).
var version string

// buildVersion is the build's version for the daemon's agent string: the
// stamped version, else the module version when the build has one, else the
// VCS revision, else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel-" + rev + dirty
}

// ---- init -------------------------------------------------------------------

var initCmd = cmdSpec{
	name:     "node init",
	synopsis: "node init --home DIR [--listen MA,MA] [--train DIR] [--test DIR] [--profile edge]",
	about: []string{
		"Creates a peer's home: DIR/key (a new Ed25519 identity, mode 0600) and DIR/config.toml",
		"(every setting written out and commented; TCP and QUIC on free ports unless --listen).",
		"Prints the peer ID. Refuses to overwrite the key of an existing home.",
	},
	required: []string{"home"},
}

func runInit(args []string, stdout, stderr io.Writer) int {
	fl := newFlags(initCmd.name)
	home := fl.String("home", "", "the peer's home `dir`ectory")
	listen := fl.String("listen", "", "comma-separated `multiaddrs` to listen on (default: TCP and QUIC on free ports of every interface)")
	train := fl.String("train", "", "the peer's training shard `dir`ectory (MNIST IDX files, see node shard); written to data.train")
	test := fl.String("test", "", "a test set `dir`ectory (t10k IDX files): the peer evaluates every round; written to data.test")
	profile := fl.String("profile", "", `"edge" for small devices (low-memory store, smaller libp2p and Go memory limits)`)
	if _, code, stop := parseFlags(fl, initCmd, args, stderr); stop {
		return code
	}
	if *profile != "" && *profile != "edge" {
		return usageErr(stderr, initCmd.name, "profile", `%q, want "" or "edge"`, *profile)
	}
	if *home == "" {
		return usageErr(stderr, initCmd.name, "home", `"" names no directory`)
	}
	addrs := splitList(*listen)
	if err := checkMultiaddrs(addrs, false); err != nil {
		return usageErr(stderr, initCmd.name, "listen", "%v", err)
	}
	id, err := daemon.Init(*home, addrs)
	if err != nil {
		return failure(stderr, initCmd.name, err)
	}
	if *train != "" || *test != "" || *profile != "" {
		if err := daemon.UpdateConfig(*home, func(c *daemon.Config) {
			c.Data.Train, c.Data.Test, c.Profile = absPath(*train), absPath(*test), *profile
		}); err != nil {
			return failure(stderr, initCmd.name, err)
		}
	}
	fmt.Fprintln(stdout, id)
	fmt.Fprintf(stderr, "node init: initialized %s (configuration in %s)\n", *home, filepath.Join(*home, daemon.ConfigFile))
	return exitOK
}

// absPath makes a path given on the command line absolute (config paths are
// relative to the home, not to where init ran).
func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// ---- run --------------------------------------------------------------------

var runCmd = cmdSpec{
	name:     "node run",
	synopsis: "node run --home DIR [--federation FILE] [--bootstrap MA,MA] [--log-format text|json] [--log-level L]",
	about: []string{
		"Runs the peer of DIR until SIGINT or SIGTERM: the federation of --federation (or of the",
		"configuration, or the one the store already serves); with none it runs idle and refuses",
		"every peer. Logs go to stderr.",
	},
	required: []string{"home"},
}

// runDaemon is `node run`; ctx ends the daemon (cleanly: exit 0).
func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fl := newFlags(runCmd.name)
	home := fl.String("home", "", "the peer's home `dir`ectory (see node init)")
	fed := fl.String("federation", "", "the federation's genesis `file` (see node genesis)")
	boot := fl.String("bootstrap", "", "comma-separated `multiaddrs` ending in /p2p/<peer ID> to dial, besides the genesis's and the configuration's")
	logFormat := fl.String("log-format", "", "log format, text or json (default: the configuration's)")
	logLevel := fl.String("log-level", "", "log `level`: debug, info, warn or error (default: the configuration's)")
	if _, code, stop := parseFlags(fl, runCmd, args, stderr); stop {
		return code
	}
	if code, ok := checkHome(*home, runCmd.name, stderr); !ok {
		return code
	}
	switch *logFormat {
	case "", "text", "json":
	default:
		return usageErr(stderr, runCmd.name, "log-format", "%q, want text or json", *logFormat)
	}
	switch *logLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return usageErr(stderr, runCmd.name, "log-level", "%q, want debug, info, warn or error", *logLevel)
	}
	bootstrap := splitList(*boot)
	if err := checkMultiaddrs(bootstrap, true); err != nil {
		return usageErr(stderr, runCmd.name, "bootstrap", "%v", err)
	}
	if *fed != "" {
		// A genesis that does not parse is the user's to fix; say so now.
		if _, _, err := genesis.Load(*fed); err != nil {
			return usageErr(stderr, runCmd.name, "federation", "%v", err)
		}
	}
	setDaemonVersion()
	err := daemon.Run(ctx, *home, daemon.RunOptions{
		Federation: *fed,
		Bootstrap:  bootstrap,
		LogFormat:  *logFormat,
		LogLevel:   *logLevel,
		Logs:       stderr,
	})
	if err != nil && !(ctx.Err() != nil && errors.Is(err, context.Canceled)) {
		return failure(stderr, runCmd.name, err)
	}
	return exitOK
}

// ---- status -----------------------------------------------------------------

var statusCmd = cmdSpec{
	name:     "node status",
	synopsis: "node status --home DIR [--json]",
	about: []string{
		"Prints the state of the peer of DIR: from the running daemon, or from its store when it",
		"is stopped. --json prints the whole status (report.json's fields plus \"daemon\").",
	},
	required: []string{"home"},
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fl := newFlags(statusCmd.name)
	home := fl.String("home", "", "the peer's home `dir`ectory")
	asJSON := fl.Bool("json", false, "print the status as JSON")
	if _, code, stop := parseFlags(fl, statusCmd, args, stderr); stop {
		return code
	}
	if code, ok := checkHome(*home, statusCmd.name, stderr); !ok {
		return code
	}
	s, err := daemon.QueryStatus(*home)
	if errors.Is(err, fs.ErrNotExist) {
		// A home whose daemon never ran has no store yet: nothing to report
		// but the peer ID.
		var info daemon.IDInfo
		if info, err = daemon.ID(*home); err == nil {
			s = daemon.Status{Daemon: daemon.DaemonStatus{ID: info.ID}}
			s.Rounds = []report.RoundReport{}
		}
	}
	if err != nil {
		return failure(stderr, statusCmd.name, err)
	}
	if *asJSON {
		b, err := json.MarshalIndent(s, "", "  ")
		if err == nil {
			_, err = stdout.Write(append(b, '\n'))
		}
		if err != nil {
			return failure(stderr, statusCmd.name, err)
		}
		return exitOK
	}
	if err := writeStatus(stdout, s); err != nil {
		return failure(stderr, statusCmd.name, err)
	}
	return exitOK
}

// writeStatus prints the human form of a status: the peer, then one line per
// round.
func writeStatus(w io.Writer, s daemon.Status) error {
	d := s.Daemon
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	orNone := func(v string) string {
		if v == "" {
			return "-"
		}
		return v
	}
	state := "stopped"
	if d.Running {
		state = "running"
	}
	fmt.Fprintf(tw, "peer\t%s\n", d.ID)
	fmt.Fprintf(tw, "role\t%s\n", orNone(d.Role))
	fed := d.Federation
	if fed == "" {
		fed = "none (idle)"
	} else if s.Scenario != "" {
		fed += " (" + s.Scenario + ")"
	}
	fmt.Fprintf(tw, "federation\t%s\n", fed)
	fmt.Fprintf(tw, "daemon\t%s\n", state)
	fmt.Fprintf(tw, "round\t%d\n", d.Round)
	fmt.Fprintf(tw, "model\t%s\n", orNone(d.ModelHash))
	fmt.Fprintf(tw, "done\t%v\n", d.Done)
	if d.Running {
		fmt.Fprintf(tw, "peers\t%d\n", len(d.Peers))
	} else {
		fmt.Fprintf(tw, "peers\t-\n")
	}
	if d.StoreUpdates > 0 {
		fmt.Fprintf(tw, "updates stored\t%d (open round)\n", d.StoreUpdates)
	}
	if d.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", d.Error)
	}
	if len(s.Rounds) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "round\taccepted\trejected\taccuracy\tmodel")
		for _, r := range s.Rounds {
			acc := "-"
			if r.Accuracy != 0 || r.Loss != 0 {
				acc = strconv.FormatFloat(r.Accuracy, 'f', 4, 64)
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", r.Round, r.Accepted, rejectedText(r), acc, shortHash(r.ModelHash))
		}
	}
	return tw.Flush()
}

// rejectedText is a round's rejected count with its reasons, e.g.
// "3 (bad-signature 1, late 2)".
func rejectedText(r report.RoundReport) string {
	if len(r.RejectedByReason) == 0 {
		return strconv.Itoa(r.Rejected)
	}
	reasons := make([]string, 0, len(r.RejectedByReason))
	for k := range r.RejectedByReason {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	parts := make([]string, len(reasons))
	for i, k := range reasons {
		parts[i] = fmt.Sprintf("%s %d", k, r.RejectedByReason[k])
	}
	return fmt.Sprintf("%d (%s)", r.Rejected, strings.Join(parts, ", "))
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "-"
	}
	return h
}

// ---- id ---------------------------------------------------------------------

var idCmd = cmdSpec{
	name:     "node id",
	synopsis: "node id --home DIR",
	about: []string{
		"Prints the peer ID of DIR on the first line, then, while its daemon runs, one listen",
		"multiaddr per line ending in /p2p/<peer ID> (what other peers bootstrap from).",
	},
	required: []string{"home"},
}

func runID(args []string, stdout, stderr io.Writer) int {
	fl := newFlags(idCmd.name)
	home := fl.String("home", "", "the peer's home `dir`ectory")
	if _, code, stop := parseFlags(fl, idCmd, args, stderr); stop {
		return code
	}
	if code, ok := checkHome(*home, idCmd.name, stderr); !ok {
		return code
	}
	info, err := daemon.ID(*home)
	if err != nil {
		return failure(stderr, idCmd.name, err)
	}
	fmt.Fprintln(stdout, info.ID)
	suffix := "/p2p/" + info.ID
	for _, a := range info.Addrs {
		if !strings.HasSuffix(a, suffix) {
			a += suffix
		}
		fmt.Fprintln(stdout, a)
	}
	return exitOK
}

// ---- export -----------------------------------------------------------------

var exportCmd = cmdSpec{
	name:     "node export",
	synopsis: "node export --home DIR --round N --out FILE",
	about: []string{
		"Writes the global model after round N as a dense safetensors file: the plain network",
		"the model computes, with the federation, round and model hash in its metadata. Reads",
		"the running daemon, or the store of a stopped one.",
	},
	required: []string{"home", "round", "out"},
}

func runExport(args []string, stdout, stderr io.Writer) int {
	fl := newFlags(exportCmd.name)
	home := fl.String("home", "", "the peer's home `dir`ectory")
	round := fl.Uint64("round", 0, "the `round` whose resulting model to export, 1 or more")
	out := fl.String("out", "", "the safetensors `file` to write")
	if _, code, stop := parseFlags(fl, exportCmd, args, stderr); stop {
		return code
	}
	if code, ok := checkHome(*home, exportCmd.name, stderr); !ok {
		return code
	}
	if *round < 1 {
		return usageErr(stderr, exportCmd.name, "round", "0, must be at least 1 (the model after round 1)")
	}
	if *out == "" {
		return usageErr(stderr, exportCmd.name, "out", `"" names no file`)
	}
	b, err := daemon.Export(*home, *round)
	if err != nil {
		return failure(stderr, exportCmd.name, err)
	}
	hash := "?"
	if _, _, meta, err := model.DecodeDenseSafetensors(b); err == nil && meta["fedrank.model_hash"] != "" {
		hash = meta["fedrank.model_hash"]
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		return failure(stderr, exportCmd.name, err)
	}
	fmt.Fprintf(stdout, "round %d model %s -> %s (%d bytes)\n", *round, hash, *out, len(b))
	return exitOK
}

// ---- evaluate ---------------------------------------------------------------

var evaluateCmd = cmdSpec{
	name:     "node evaluate",
	synopsis: "node evaluate --model FILE [--data DIR] [--json]",
	about: []string{
		"Scores a dense safetensors model (as node export writes) on a test set: the MNIST",
		"test set shipped with the Go module, or the t10k IDX files in --data.",
	},
	required: []string{"model"},
}

// evalJSON is `node evaluate --json`.
type evalJSON struct {
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	Samples  int     `json:"samples"`
}

func runEvaluate(args []string, stdout, stderr io.Writer) int {
	fl := newFlags(evaluateCmd.name)
	file := fl.String("model", "", "the safetensors `file` to score")
	dir := fl.String("data", "", "`dir`ectory of the test set, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (default: the MNIST copy shipped with the Go module)")
	asJSON := fl.Bool("json", false, "print the score as JSON")
	if _, code, stop := parseFlags(fl, evaluateCmd, args, stderr); stop {
		return code
	}
	b, err := os.ReadFile(*file)
	if err != nil {
		return usageErr(stderr, evaluateCmd.name, "model", "%v", err)
	}
	if *dir != "" {
		if st, err := os.Stat(*dir); err != nil {
			return usageErr(stderr, evaluateCmd.name, "data", "%v", err)
		} else if !st.IsDir() {
			return usageErr(stderr, evaluateCmd.name, "data", "%s is not a directory", *dir)
		}
	}
	e, err := daemon.Evaluate(b, *dir)
	if err != nil {
		return failure(stderr, evaluateCmd.name, err)
	}
	if *asJSON {
		out, err := json.MarshalIndent(evalJSON{e.Accuracy, e.Loss, e.Samples}, "", "  ")
		if err == nil {
			_, err = stdout.Write(append(out, '\n'))
		}
		if err != nil {
			return failure(stderr, evaluateCmd.name, err)
		}
		return exitOK
	}
	fmt.Fprintf(stdout, "accuracy %.4f loss %.4f samples %d\n", e.Accuracy, e.Loss, e.Samples)
	return exitOK
}

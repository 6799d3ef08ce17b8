package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/task"
)

// flagForField maps the JSON name of each simnet.Config field to the flag
// that sets it, so that a *simnet.ConfigError is reported in the user's terms.
var flagForField = map[string]string{
	"scenario":         "scenario",
	"peers":            "peers",
	"per_round":        "per-round",
	"rounds":           "rounds",
	"seed":             "seed",
	"partition":        "partition",
	"aggregator":       "aggregator",
	"attackers":        "attackers",
	"attack":           "attack",
	"net":              "net",
	"crash":            "crash",
	"quorum":           "quorum",
	"round_timeout_ms": "round-timeout",
	"data_dir":         "data",
	"workers":          "workers",
	"rank":             "rank",
	"compression":      "compression",
	// Faults.
	"partition_net":       "partition-net",
	"stragglers":          "stragglers",
	"churn":               "churn",
	"crash_aggregator":    "crash-aggregator",
	"crash_aggregator_at": "crash-aggregator-at",
	"aggregator_down_ms":  "aggregator-down",
	"edge_peers":          "edge-peers",
	"edge_rank":           "edge-rank",
	"edge_uplink_mbit":    "edge-uplink",
	// Local training.
	"lr":            "lr",
	"momentum":      "momentum",
	"weight_decay":  "weight-decay",
	"epochs":        "epochs",
	"batch":         "batch",
	"lr_schedule":   "lr-schedule",
	"lr_decay":      "lr-decay",
	"ranking_codec": "ranking-codec",
	"model":         "model",
}

// reportOnlyFields are the simnet.Config fields that no flag sets: effective
// values the run reports.
var reportOnlyFields = map[string]bool{"aggregator_params": true}

// flagName is the flag, with its dashes, that sets the Config field named by
// a ConfigError; a field no flag sets is returned as it is.
func flagName(field string) string {
	if f, ok := flagForField[field]; ok {
		return "--" + f
	}
	return field
}

// usageError is a bad flag value found by the CLI itself.
type usageError struct {
	flag string // without dashes
	msg  string
}

func (e *usageError) Error() string { return fmt.Sprintf("invalid --%s: %s", e.flag, e.msg) }

// simOptions is the parsed command line of `node sim`.
type simOptions struct {
	cfg   simnet.Config
	given map[string]bool // the flags on the command line, by name
	out   string
	json  bool
	list  bool
	quiet bool
}

// parseSim parses the flags of `node sim`. Flags left out leave their Config
// field zero, which simnet.Run fills from the scenario's defaults. Syntax
// errors (an unknown flag, an unparsable value) and -h are printed on stderr
// here; a value that parses but cannot be right comes back as a *usageError
// for the caller to print.
func parseSim(args []string, stderr io.Writer) (simOptions, error) {
	o := simOptions{given: map[string]bool{}}
	c := &o.cfg
	fs := flag.NewFlagSet("node sim", flag.ContinueOnError)
	// The flag package's own messages are reworded below, and the flag list is
	// printed for -h only: after a typo, one line naming the flag says more.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.Scenario, "scenario", "", "scenario `name` (default "+simnet.DefaultScenario+")")
	fs.IntVar(&c.Peers, "peers", 0, "number of simulated peers")
	fs.IntVar(&c.PerRound, "per-round", 0, "peers selected to train each round")
	fs.IntVar(&c.Rounds, "rounds", 0, "number of rounds")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed of every random choice; the same seed and flags give the same model")
	fs.StringVar(&c.Partition, "partition", "", "data partition: iid, dirichlet:ALPHA or shards:K")
	fs.StringVar(&c.Aggregator, "aggregator", "", "aggregator `name` (default: the scenario's)")
	fs.Float64Var(&c.Attackers, "attackers", 0, "`fraction` of peers that attack, in [0, 0.5)")
	fs.StringVar(&c.Attack, "attack", "", "attack `name`")
	fs.StringVar(&c.Net, "net", "", "network profile: ideal, lan, wan or lossy")
	fs.Float64Var(&c.Crash, "crash", 0, "`probability` that a selected trainer crashes in a round")
	fs.Float64Var(&c.Quorum, "quorum", 0, "`fraction` of the selected peers whose updates close a round early")
	fs.Func("round-timeout", "round deadline in simulated time, a `duration` such as 30s or 1500ms", msFlag(&c.RoundTimeoutMs))
	fs.StringVar(&c.DataDir, "data", "", "`dir`ectory of the MNIST IDX files (default: the copy shipped with the Go module)")
	fs.IntVar(&c.Rank, "rank", 0, "adapter `rank` of LoRA scenarios (default: the scenario's, 4)")
	fs.StringVar(&c.Compression, "compression", "", "upload codec of LoRA scenarios: fp32, fp16 or int8 (default: the scenario's, int8)")
	fs.IntVar(&c.Workers, "workers", 0, "goroutines for training, evaluation and the aggregator's Finalize (default GOMAXPROCS); changes wall time, never results")
	// Faults (simnet.Faults describes them for --list).
	fs.Func("partition-net", "cut peers off from the aggregator: `schedule` 'ROUNDS:WHO;...' (10-20:0.3, 4:peer-0001,peer-0002) or @FILE (one 'ROUNDS WHO' per line)", func(v string) error {
		if path, ok := strings.CutPrefix(v, "@"); ok {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			if v, err = simnet.LoadPartitionSchedule(f); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		c.PartitionNet = v
		return nil
	})
	fs.StringVar(&c.Stragglers, "stragglers", "", "per-peer compute speed `model`: lognormal:SIGMA or slow:FRACxFACTOR (e.g. slow:0.1x5: 10% of peers 5x slower)")
	fs.Float64Var(&c.Churn, "churn", 0, "`probability` that a peer is away in a round (it comes back empty)")
	fs.Float64Var(&c.CrashAggregator, "crash-aggregator", 0, "`probability` that the aggregator crashes in a round (it restarts from its store)")
	fs.StringVar(&c.CrashAggregatorAt, "crash-aggregator-at", "", "`rounds` in which the aggregator crashes, e.g. 3,7")
	fs.Float64Var(&c.EdgePeers, "edge-peers", 0, "`fraction` of peers that are small boards (drawn from the seed), with --edge-uplink and --edge-rank")
	fs.Float64Var(&c.EdgeUplinkMbit, "edge-uplink", 0, "edge peers' uplink in `Mbit/s` (default: the network profile's)")
	fs.IntVar(&c.EdgeRank, "edge-rank", 0, "edge peers' adapter `rank` in low-rank scenarios, at most --rank (default: the federation's)")
	fs.Func("aggregator-down", "how long a crashed aggregator stays down, a simulated `duration` (default 5s)", msFlag(&c.AggregatorDownMs))
	// Local training (default: the scenario's).
	fs.Float64Var(&c.LR, "lr", 0, "local learning `rate` (default: the scenario's)")
	fs.Float64Var(&c.Momentum, "momentum", 0, "local SGD `momentum` (default: the scenario's)")
	fs.Float64Var(&c.WeightDecay, "weight-decay", 0, "local weight `decay` (default: the scenario's)")
	fs.IntVar(&c.Epochs, "epochs", 0, "local `epochs` per round (default: the scenario's)")
	fs.IntVar(&c.Batch, "batch", 0, "local batch `size` (default: the scenario's)")
	fs.StringVar(&c.LRSchedule, "lr-schedule", "", "learning-rate `schedule` within a round: cosine or constant (default: the scenario's)")
	fs.Float64Var(&c.LRDecay, "lr-decay", 0, "learning-rate `factor` per round, in (0, 1] (default: the scenario's)")
	fs.StringVar(&c.RankingCodec, "ranking-codec", "", "how peers send rankings: packed (ceil(log2 n) bits per edge), delta (lossless, coded against the global model), bucket:B or bucket-mask:B (lossy: each edge's bucket of B, coded against the global model) (default: the scenario's; frl-mnist's is "+task.DefaultRankingCodec+")")
	fs.StringVar(&c.Model, "model", "", "the `network` of the MNIST scenarios: fc (LeNet-300-100, the default) or lenet (the reference's conv LeNet: two 3x3 convolutions, 2x2 max-pool, two fully connected layers)")
	fs.StringVar(&o.out, "out", "", "write report.json, rounds.csv and accuracy.png into `dir`")
	fs.BoolVar(&o.json, "json", false, "print report.json on stdout instead of the table")
	fs.BoolVar(&o.list, "list", false, "list the scenarios, aggregators, attacks, network profiles and faults")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")

	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if errors.Is(err, flag.ErrHelp) {
		simUsage(fs, stderr)
		return o, err
	}
	if err != nil {
		fmt.Fprintf(stderr, "node sim: %v\nRun 'node sim -h' for the flags.\n", err)
		return o, err
	}
	fs.Visit(func(f *flag.Flag) { o.given[f.Name] = true })
	if !o.list {
		if err := checkGivenZeros(o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// msFlag parses a duration flag into whole milliseconds.
func msFlag(dst *int64) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "time: "))
		}
		if d%time.Millisecond != 0 {
			return errors.New("must be a whole number of milliseconds")
		}
		*dst = d.Milliseconds()
		return nil
	}
}

// simUsage prints the flags of `node sim` as DESIGN.md writes them, with two dashes.
var simCmd = cmdSpec{
	name:     "node sim",
	synopsis: "node sim [flags]",
	about: []string{
		"Runs a simulated federation: a progress bar on stderr, then a summary table on stdout",
		"(or, with --json, report.json). Flags left out take the scenario's defaults;",
		"--list shows the scenarios, aggregators, attacks, network profiles and faults.",
	},
}

func simUsage(fs *flag.FlagSet, w io.Writer) { cmdUsage(fs, simCmd, w) }

// checkGivenZeros rejects a flag given as zero (or "") that simnet would
// replace with the scenario's default: Config cannot tell "0" from "unset", so
// the run would quietly ignore what the user asked for. Where the effective
// value is zero too, the user gets the zero they asked for.
func checkGivenZeros(o simOptions) error {
	eff, _, err := simnet.Resolve(o.cfg)
	if err != nil {
		return nil // simnet.Run reports it
	}
	cv, ev := reflect.ValueOf(o.cfg), reflect.ValueOf(eff)
	for i := range cv.NumField() {
		field := strings.Split(cv.Type().Field(i).Tag.Get("json"), ",")[0]
		fl, ok := flagForField[field]
		if !ok || !o.given[fl] || !cv.Field(i).IsZero() || ev.Field(i).IsZero() {
			continue
		}
		zero, def := "0", fmt.Sprint(ev.Field(i).Interface())
		switch {
		case strings.HasSuffix(field, "_ms"):
			zero, def = "0s", (time.Duration(ev.Field(i).Int()) * time.Millisecond).String()
		case cv.Field(i).Kind() == reflect.String:
			zero, def = `""`, fmt.Sprintf("%q", def)
		}
		return &usageError{fl, fmt.Sprintf("%s would mean the scenario's default (%s); leave the flag out to use it", zero, def)}
	}
	return nil
}

// runSim is `node sim`.
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseSim(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		fmt.Fprintf(stderr, "node sim: %v\n", ue)
		return exitUsage
	}
	if err != nil {
		return exitUsage // parseSim has said what is wrong
	}
	if o.list {
		return listSim(o.json, stdout, stderr)
	}
	if o.out != "" {
		// Find out now, not after an hour of simulation, that --out is unusable.
		if err := checkWritableDir(o.out); err != nil {
			fmt.Fprintf(stderr, "node sim: invalid --out: %v\n", err)
			return exitUsage
		}
	}

	prog := newProgress(stderr, o.quiet)
	var (
		mu    sync.Mutex
		done  []simnet.RoundReport
		total int
	)
	obs := func(r simnet.RoundReport, totalRounds int) {
		mu.Lock()
		defer mu.Unlock()
		done = append(done, r)
		total = totalRounds
		prog.round(r, totalRounds)
	}
	start := time.Now()
	rep, err := simnet.Run(ctx, o.cfg, obs)
	mu.Lock()
	defer mu.Unlock()
	prog.finish()

	if err != nil {
		var ce *simnet.ConfigError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "node sim: invalid %s: %s\n", flagName(ce.Field), ce.Msg)
			return exitUsage
		}
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "node sim: %v\n", err)
			return exitFailure
		}
		// Interrupted: report the rounds that completed, then fail.
		if rep == nil {
			rep = partialReport(o.cfg, done, time.Since(start))
		}
		if c, ok := rep.Config.(simnet.Config); ok && c.Rounds > 0 {
			total = c.Rounds
		}
		if total > 0 {
			fmt.Fprintf(stderr, "node sim: interrupted after %d of %d rounds\n", len(rep.Rounds), total)
		} else {
			fmt.Fprintf(stderr, "node sim: interrupted after %d rounds\n", len(rep.Rounds))
		}
		if len(rep.Rounds) > 0 {
			writeOutputs(o, rep, stdout, stderr)
		}
		return exitFailure
	}
	if !writeOutputs(o, rep, stdout, stderr) {
		return exitFailure
	}
	return exitOK
}

// writeOutputs prints the table or the JSON report and writes --out. It
// reports whether all of it succeeded, having said on stderr what did not.
func writeOutputs(o simOptions, rep *simnet.Report, stdout, stderr io.Writer) bool {
	var err error
	if o.json {
		err = report.WriteJSON(stdout, rep)
	} else {
		err = report.Table(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "node sim: %v\n", err)
		return false
	}
	if o.out == "" {
		return true
	}
	if err := report.WriteDir(o.out, rep); err != nil {
		fmt.Fprintf(stderr, "node sim: %v\n", err)
		return false
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "node sim: wrote %s, %s and %s in %s\n", report.JSONFile, report.CSVFile, report.PNGFile, o.out)
	}
	return true
}

// partialReport stands in for the report of an interrupted run when
// simnet.Run returned none: the rounds the observer saw and their totals.
func partialReport(cfg simnet.Config, rounds []simnet.RoundReport, wall time.Duration) *simnet.Report {
	if cfg.Scenario == "" {
		cfg.Scenario = simnet.DefaultScenario
	}
	rep := &simnet.Report{Scenario: cfg.Scenario, Seed: cfg.Seed, Config: cfg, Rounds: rounds, WallSeconds: wall.Seconds()}
	for i, r := range rounds {
		rep.BytesUpTotal += r.BytesUp
		rep.BytesDownTotal += r.BytesDown
		if i == 0 || r.Accuracy > rep.BestAccuracy {
			rep.BestAccuracy = r.Accuracy
		}
		rep.FinalAccuracy = r.Accuracy
		rep.Model.Hash = r.ModelHash
	}
	return rep
}

// checkWritableDir creates dir if needed and checks that files can be made in it.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".node-sim-check-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// listing is the --list --json output.
type listing struct {
	DefaultScenario string            `json:"default_scenario"`
	Scenarios       []scenarioListing `json:"scenarios"`
	Attacks         []simnet.Info     `json:"attacks"`
	NetProfiles     []simnet.Info     `json:"net_profiles"`
	Faults          []simnet.Info     `json:"faults"`
}

type scenarioListing struct {
	Name              string   `json:"name"`
	Description       string   `json:"description"`
	DefaultAggregator string   `json:"default_aggregator"`
	Aggregators       []string `json:"aggregators"`
	Models            []string `json:"models,omitempty"`
}

func listSim(asJSON bool, stdout, stderr io.Writer) int {
	l := listing{DefaultScenario: simnet.DefaultScenario, Attacks: simnet.Attacks(), NetProfiles: simnet.NetProfiles(), Faults: simnet.Faults()}
	for _, s := range simnet.Scenarios() {
		def := s.Defaults.Aggregator
		if def == "" && len(s.Aggregators) > 0 {
			def = s.Aggregators[0]
		}
		l.Scenarios = append(l.Scenarios, scenarioListing{s.Name, s.Description, def, s.Aggregators, s.Models})
	}
	if asJSON {
		b, err := json.MarshalIndent(l, "", "  ")
		if err == nil {
			_, err = stdout.Write(append(b, '\n'))
		}
		if err != nil {
			fmt.Fprintf(stderr, "node sim: %v\n", err)
			return exitFailure
		}
		return exitOK
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "Scenarios (--scenario):")
	for _, s := range l.Scenarios {
		name := s.Name
		if name == l.DefaultScenario {
			name += " (default)"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, s.Description)
		var aggs []string
		for _, a := range s.Aggregators {
			if a == s.DefaultAggregator {
				a += " (default)"
			}
			aggs = append(aggs, a)
		}
		fmt.Fprintf(tw, "  \taggregators (--aggregator): %s\n", strings.Join(aggs, ", "))
		if len(s.Models) > 0 {
			fmt.Fprintf(tw, "  \tmodels (--model): %s (default), %s\n", s.Models[0], strings.Join(s.Models[1:], ", "))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Attacks (--attack):")
	for _, a := range l.Attacks {
		fmt.Fprintf(tw, "  %s\t%s\n", a.Name, a.Description)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Network profiles (--net):")
	for _, n := range l.NetProfiles {
		fmt.Fprintf(tw, "  %s\t%s\n", n.Name, n.Description)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Faults (seeded, replayable):")
	for _, f := range l.Faults {
		fmt.Fprintf(tw, "  %s\t%s\n", f.Name, f.Description)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "node sim: %v\n", err)
		return exitFailure
	}
	return exitOK
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedrank/fedrank/simnet"
)

// robustOptions is the parsed command line of `node robustness`.
type robustOptions struct {
	base        simnet.Config // the settings every run shares
	aggregators []string
	attacks     []string
	fractions   []float64
	scenarios   []string
	quiet       bool
}

// Defaults of `node robustness`: the rows the robustness table of issue 3
// asks for, on the FRL reference's MNIST setting.
const (
	defaultRobustAggregators = "vote,vote-robust,fedavg,median,trimmed-mean,multi-krum"
	defaultRobustFractions   = "0,0.1,0.2,0.3"
	defaultRobustScenarios   = "frl-mnist,fedavg-mnist"
)

func parseRobustness(args []string, stderr io.Writer) (robustOptions, error) {
	var o robustOptions
	c := &o.base
	fs := flag.NewFlagSet("node robustness", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var aggs, attacks, fracs, scenarios string
	names := make([]string, 0, 5)
	for _, a := range simnet.Attacks() {
		names = append(names, a.Name)
	}
	fs.IntVar(&c.Rounds, "rounds", 30, "rounds of every run")
	fs.IntVar(&c.Peers, "peers", 1000, "simulated peers of every run")
	fs.IntVar(&c.PerRound, "per-round", 25, "peers selected to train each round")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of every run")
	fs.StringVar(&c.Partition, "partition", "dirichlet:1.0", "data partition: iid, dirichlet:ALPHA or shards:K")
	fs.StringVar(&aggs, "aggregators", defaultRobustAggregators, "comma-separated `names` of the rows")
	fs.StringVar(&attacks, "attacks", strings.Join(names, ","), "comma-separated attack `names` of the columns")
	fs.StringVar(&fracs, "fractions", defaultRobustFractions, "comma-separated attacker `fractions` of the columns (0: no attack)")
	fs.StringVar(&scenarios, "scenarios", defaultRobustScenarios, "comma-separated `scenarios`: each row runs on the first that has its aggregator")
	fs.StringVar(&c.DataDir, "data", "", "`dir`ectory of the MNIST IDX files (default: the copy shipped with the Go module)")
	fs.IntVar(&c.Workers, "workers", 0, "goroutines for training and evaluation (default GOMAXPROCS)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")

	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stderr, "usage: node robustness [flags]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Runs every aggregator against every attack and fraction of attacker peers, one")
		fmt.Fprintln(stderr, "simulation at a time, and prints the final accuracies as a Markdown table.")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Flags:")
		fs.VisitAll(func(f *flag.Flag) {
			arg, help := flag.UnquoteUsage(f)
			if arg != "" {
				arg = " " + arg
			}
			fmt.Fprintf(stderr, "  --%s%s\n        %s (default %s)\n", f.Name, arg, help, f.DefValue)
		})
		return o, err
	}
	if err != nil {
		fmt.Fprintf(stderr, "node robustness: %v\nRun 'node robustness -h' for the flags.\n", err)
		return o, err
	}
	// simnet reads 0 as "the scenario's default": every run must use these.
	for name, v := range map[string]int{"rounds": c.Rounds, "peers": c.Peers, "per-round": c.PerRound} {
		if v < 1 {
			return o, &usageError{name, fmt.Sprintf("%d, must be at least 1", v)}
		}
	}
	if c.Seed == 0 {
		return o, &usageError{"seed", "0 would mean each scenario's default seed; give one"}
	}
	o.aggregators, o.attacks, o.scenarios = splitList(aggs), splitList(attacks), splitList(scenarios)
	for _, a := range o.attacks {
		if !slices.Contains(names, a) {
			return o, &usageError{"attacks", fmt.Sprintf("unknown attack %q (have: %s)", a, strings.Join(names, ", "))}
		}
	}
	for _, s := range o.scenarios {
		if _, ok := simnet.LookupScenario(s); !ok {
			return o, &usageError{"scenarios", fmt.Sprintf("unknown scenario %q", s)}
		}
	}
	for _, a := range o.aggregators {
		if _, ok := o.scenarioOf(a); !ok {
			return o, &usageError{"aggregators", fmt.Sprintf("no scenario of --scenarios %s has aggregator %q", scenarios, a)}
		}
	}
	for _, f := range splitList(fracs) {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v >= 0 && v < 0.5) {
			return o, &usageError{"fractions", fmt.Sprintf("%q is not a fraction in [0, 0.5)", f)}
		}
		o.fractions = append(o.fractions, v)
	}
	if len(o.aggregators) == 0 || len(o.fractions) == 0 {
		return o, &usageError{"aggregators", "the table needs at least one aggregator and one fraction"}
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// scenarioOf is the first of the scenarios that has aggregator agg.
func (o robustOptions) scenarioOf(agg string) (string, bool) {
	for _, name := range o.scenarios {
		if s, ok := simnet.LookupScenario(name); ok && slices.Contains(s.Aggregators, agg) {
			return name, true
		}
	}
	return "", false
}

// robustColumn is one column of the table: an attack at a fraction, or no
// attack (fraction 0, attack "").
type robustColumn struct {
	attack   string
	fraction float64
}

func (c robustColumn) String() string {
	if c.fraction == 0 {
		return "no attack"
	}
	return fmt.Sprintf("%s %g%%", c.attack, 100*c.fraction)
}

func (o robustOptions) columns() []robustColumn {
	var cols []robustColumn
	if slices.Contains(o.fractions, 0) {
		cols = append(cols, robustColumn{})
	}
	for _, a := range o.attacks {
		for _, f := range o.fractions {
			if f > 0 {
				cols = append(cols, robustColumn{a, f})
			}
		}
	}
	return cols
}

// robustCell is one run's outcome.
type robustCell struct {
	ran      bool // false: the attack does not apply to the row's scenario, or the run was interrupted before it
	accuracy float64
	err      error
}

type runFunc func(ctx context.Context, cfg simnet.Config) (*simnet.Report, error)

// robustness runs the table's simulations one after the other (each uses
// every core) and returns its cells, [row][column]. A run that fails leaves
// an error in its cell and the others go on; a cancelled ctx stops the table.
func robustness(ctx context.Context, o robustOptions, run runFunc, progress io.Writer) [][]robustCell {
	cols := o.columns()
	cells := make([][]robustCell, len(o.aggregators))
	type job struct{ row, col int }
	var jobs []job
	cfgs := map[job]simnet.Config{}
	for r, agg := range o.aggregators {
		cells[r] = make([]robustCell, len(cols))
		scenario, _ := o.scenarioOf(agg)
		for c, col := range cols {
			cfg := o.base
			cfg.Scenario, cfg.Aggregator, cfg.Attack, cfg.Attackers = scenario, agg, col.attack, col.fraction
			var ce *simnet.ConfigError
			if _, _, err := simnet.Resolve(cfg); errors.As(err, &ce) && ce.Field == "attack" {
				continue // the attack does not fit the scenario's updates
			}
			jobs = append(jobs, job{r, c})
			cfgs[job{r, c}] = cfg
		}
	}
	start := time.Now()
	for i, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		cfg := cfgs[j]
		t0 := time.Now()
		rep, err := run(ctx, cfg)
		if ctx.Err() != nil {
			break
		}
		cell := robustCell{ran: true, err: err}
		if err == nil {
			cell.accuracy = rep.FinalAccuracy
		}
		cells[j.row][j.col] = cell
		if progress != nil {
			res := fmt.Sprintf("%.4f", cell.accuracy)
			if err != nil {
				res = "error: " + err.Error()
			}
			fmt.Fprintf(progress, "[%d/%d] %s on %s, %s: %s (%.1f s, %.0f s so far)\n", i+1, len(jobs),
				cfg.Aggregator, cfg.Scenario, cols[j.col], res, time.Since(t0).Seconds(), time.Since(start).Seconds())
		}
	}
	return cells
}

// writeRobustTable prints the table as Markdown.
func writeRobustTable(w io.Writer, o robustOptions, cells [][]robustCell) error {
	cols := o.columns()
	var b strings.Builder
	fmt.Fprintf(&b, "Final accuracy after %d rounds: %d peers, %d per round, partition %s, seed %d. "+
		"Attackers are peers 0 .. floor(fraction x peers)-1, never a majority of a round. "+
		"\"-\": the attack does not apply to the row's updates.\n\n",
		o.base.Rounds, o.base.Peers, o.base.PerRound, o.base.Partition, o.base.Seed)
	b.WriteString("| aggregator | scenario |")
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", c)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(cols)) + "\n")
	for r, agg := range o.aggregators {
		scenario, _ := o.scenarioOf(agg)
		fmt.Fprintf(&b, "| %s | %s |", agg, scenario)
		for _, cell := range cells[r] {
			switch {
			case cell.err != nil:
				b.WriteString(" error |")
			case cell.ran:
				fmt.Fprintf(&b, " %.4f |", cell.accuracy)
			default:
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// runRobustness is `node robustness`.
func runRobustness(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseRobustness(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		fmt.Fprintf(stderr, "node robustness: %v\n", ue)
		return exitUsage
	}
	if err != nil {
		return exitUsage
	}
	// Check the shared settings once, before the first long run.
	probe := o.base
	probe.Scenario, _ = o.scenarioOf(o.aggregators[0])
	if _, _, err := simnet.Resolve(probe); err != nil {
		var ce *simnet.ConfigError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "node robustness: invalid %s: %s\n", flagName(ce.Field), ce.Msg)
			return exitUsage
		}
	}
	var progress io.Writer
	if !o.quiet {
		progress = stderr
	}
	run := func(ctx context.Context, cfg simnet.Config) (*simnet.Report, error) { return simnet.Run(ctx, cfg, nil) }
	cells := robustness(ctx, o, run, progress)
	if err := writeRobustTable(stdout, o, cells); err != nil {
		fmt.Fprintf(stderr, "node robustness: %v\n", err)
		return exitFailure
	}
	failed := ctx.Err() != nil
	for r := range cells {
		for c, cell := range cells[r] {
			if cell.err != nil {
				fmt.Fprintf(stderr, "node robustness: %s, %s: %v\n", o.aggregators[r], o.columns()[c], cell.err)
				failed = true
			}
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "node robustness: interrupted; the table is partial")
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

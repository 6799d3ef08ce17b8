package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/fedrank/fedrank/sweeps"
)

var robustnessCmd = cmdSpec{
	name:     "node robustness",
	synopsis: "node robustness [--out DIR] [--workers N] [--dry-run] [--rounds R] [--seeds S,S] [--aggregators A,A] [--attacks A,A] [--fractions F,F] [flags]",
	about: []string{
		"Runs the robustness table: the sweep sweeps/robustness.toml (built into the binary), every",
		"aggregator against every attack that fits its updates at each fraction of attackers, over",
		"three seeds; `node sweep` with that file. Prints summary.md, whose last table has a row per",
		"aggregator and a column per attack and fraction (final accuracy, mean ± 95% interval).",
		"Cells are cached in DIR/cells: run it again to resume. The flags below other than the",
		"sweep's narrow or change the table; left out, the file's settings hold.",
	},
}

// robustFlags are the flags of `node robustness` that change the file's
// sweep, and what each becomes: --set FIELD=... or --only FIELD=....
var robustFlags = []struct {
	flag, kind, field, help string
}{
	{"rounds", "set", "rounds", "rounds of every run (file: 30)"},
	{"peers", "set", "peers", "simulated peers of every run (file: 1000)"},
	{"per-round", "set", "per_round", "peers selected to train each round (file: 25)"},
	{"partition", "set", "partition", "data partition: iid, dirichlet:ALPHA or shards:K (file: dirichlet:1.0)"},
	{"data", "set", "data_dir", "`dir`ectory of the MNIST IDX files (default: the copy shipped with the Go module)"},
	{"seeds", "set", "seed", "comma-separated `seeds` of every cell (file: 1,2,3)"},
	{"seed", "set", "seed", "one `seed` for every cell (the table of a single run per cell)"},
	{"fractions", "set", "attackers", "comma-separated attacker `fractions` (file: 0,0.2,0.3; 0: no attack)"},
	{"aggregators", "only", "aggregator", "comma-separated aggregator `names`: only these rows"},
	{"attacks", "only", "attack", "comma-separated attack `names`: only these columns (and the baselines)"},
	{"scenarios", "only", "scenario", "comma-separated `scenarios`: only their rows"},
}

// parseRobustness turns the command line of `node robustness` into the
// sweep it runs.
func parseRobustness(args []string, stderr io.Writer) (o sweepOptions, code int, stop bool) {
	fl := newFlags(robustnessCmd.name)
	sweepFlags(fl, &o)
	values := make([]string, len(robustFlags))
	for i, f := range robustFlags {
		fl.StringVar(&values[i], f.flag, "", f.help)
	}
	if _, code, stop := parseFlags(fl, robustnessCmd, args, stderr); stop {
		return o, code, true
	}
	o.file, o.fromEmbd = sweeps.Robustness, sweeps.Files
	if o.out == "" {
		o.out = "out/robustness"
	}
	given := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["seed"] && given["seeds"] {
		fmt.Fprintf(stderr, "%s: invalid --seed: give --seed or --seeds, not both\n", robustnessCmd.name)
		return o, exitUsage, true
	}
	for i, f := range robustFlags {
		if !given[f.flag] {
			continue
		}
		if strings.TrimSpace(values[i]) == "" {
			fmt.Fprintf(stderr, "%s: invalid --%s: empty\n", robustnessCmd.name, f.flag)
			return o, exitUsage, true
		}
		a := f.field + "=" + values[i]
		if _, _, err := parseAssignment(a); err != nil {
			fmt.Fprintf(stderr, "%s: invalid --%s: %v\n", robustnessCmd.name, f.flag, err)
			return o, exitUsage, true
		}
		if f.kind == "set" {
			o.set = append(o.set, a)
		} else {
			o.only = append(o.only, a)
		}
	}
	return o, exitOK, false
}

// runRobustness is `node robustness`.
func runRobustness(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code, stop := parseRobustness(args, stderr)
	if stop {
		return code
	}
	return runSweep(ctx, robustnessCmd.name, o, nil, stdout, stderr)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

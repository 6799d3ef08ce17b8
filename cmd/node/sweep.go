package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/fedrank/fedrank/sweep"
)

var sweepCmd = cmdSpec{
	name:     "node sweep",
	synopsis: "node sweep FILE [--out DIR] [--workers N] [--dry-run] [--set FIELD=V[,V...]] [--only FIELD=V[,V...]]",
	about: []string{
		"Runs every cell of the grid that FILE (TOML or JSON) describes: base settings crossed with",
		"scenarios x aggregators x attacks x attacker fractions x network profiles x seeds (and any",
		"other setting under [vary]; see package sweep for the format, sweeps/ for examples).",
		"Each finished cell is cached in DIR/cells/<config hash>.json: a sweep run again (after an",
		"interruption, or with more cells) runs only the cells it lacks. Writes DIR/summary.csv and",
		"DIR/summary.md (per group of cells differing by seed only: mean, sd and 95% interval),",
		"DIR/runs.csv (every run) and DIR/plots/*.png (per-round means with bands), and prints",
		"summary.md. Every cell is checked before any runs: a bad file or setting exits 2.",
		"--workers cells run at once, the cores shared among them (one each by default, which",
		"beats running one cell at a time on all cores: a run's event loop and aggregation are serial).",
	},
}

// multiFlag collects the values of a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// sweepOptions is the parsed command line of `node sweep` (and what
// `node robustness` turns its flags into).
type sweepOptions struct {
	file     string
	out      string
	workers  int
	dryRun   bool
	quiet    bool
	set      multiFlag // FIELD=V[,V...]
	only     multiFlag // FIELD=V[,V...]
	fromEmbd fs.FS     // read file from here (the embedded sweeps) rather than the disk
}

// sweepFlags adds the flags `node sweep` and `node robustness` share.
func sweepFlags(fl *flag.FlagSet, o *sweepOptions) {
	fl.StringVar(&o.out, "out", "", "output `dir`ectory: the cell cache, summaries and plots (default out/NAME, NAME the sweep's)")
	fl.IntVar(&o.workers, "workers", runtime.GOMAXPROCS(0), "`cells` run at once; the cores are shared among them")
	fl.BoolVar(&o.dryRun, "dry-run", false, "check the file and list the cells (cached or to run) without running any")
	fl.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
}

// parseSweep parses the command line of `node sweep`; FILE may come before
// or after the flags. A bad command line is reported on stderr here, with
// the exit code to return.
func parseSweep(args []string, stderr io.Writer) (o sweepOptions, code int, stop bool) {
	fl := newFlags(sweepCmd.name)
	sweepFlags(fl, &o)
	fl.Var(&o.set, "set", "`FIELD=V[,V...]`: give a setting (by its JSON name) this value in every cell, or cross these values; replaces what FILE says of it (repeatable)")
	fl.Var(&o.only, "only", "`FIELD=V[,V...]`: run only the cells whose setting has one of these values (repeatable; cells without attackers pass an attack filter)")
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.file, args = args[0], args[1:]
	}
	err := fl.Parse(args)
	if err == nil && o.file == "" && fl.NArg() > 0 {
		o.file = fl.Arg(0)
		err = fl.Parse(fl.Args()[1:])
	}
	if err == nil && fl.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	if err == nil && o.file == "" {
		err = errors.New("missing the sweep FILE")
	}
	if errors.Is(err, flag.ErrHelp) {
		cmdUsage(fl, sweepCmd, stderr)
		return o, exitOK, true
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for the flags.\n", sweepCmd.name, err, sweepCmd.name)
		return o, exitUsage, true
	}
	return o, exitOK, false
}

// runSweepCmd is `node sweep`.
func runSweepCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code, stop := parseSweep(args, stderr)
	if stop {
		return code
	}
	return runSweep(ctx, sweepCmd.name, o, nil, stdout, stderr)
}

// parseAssignment splits FIELD=V[,V...] and converts the values to the field's type.
func parseAssignment(s string) (field string, values []any, err error) {
	field, list, ok := strings.Cut(s, "=")
	field = strings.TrimSpace(field)
	if !ok || field == "" {
		return "", nil, fmt.Errorf("%q is not FIELD=VALUE[,VALUE...]", s)
	}
	for _, text := range strings.Split(list, ",") {
		v, err := sweep.ParseValue(field, strings.TrimSpace(text))
		if err != nil {
			return "", nil, fmt.Errorf("%s: %v", field, err)
		}
		values = append(values, v)
	}
	return field, values, nil
}

// loadSweep reads the sweep of o, applies --set and --only and checks
// every cell. On failure it has said why on stderr and returns the exit code.
func loadSweep(name string, o sweepOptions, stderr io.Writer) (*sweep.Spec, []sweep.Cell, int) {
	var (
		spec *sweep.Spec
		err  error
	)
	if o.fromEmbd != nil {
		var b []byte
		if b, err = fs.ReadFile(o.fromEmbd, o.file); err == nil {
			spec, err = sweep.Parse(o.file, b)
		}
	} else {
		spec, err = sweep.Load(o.file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", name, o.file, err)
		return nil, nil, exitUsage
	}
	for _, s := range o.set {
		field, values, err := parseAssignment(s)
		if err == nil {
			err = spec.Set(field, values)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: invalid --set: %v\n", name, err)
			return nil, nil, exitUsage
		}
	}
	for _, s := range o.only {
		field, values, err := parseAssignment(s)
		if err == nil {
			err = spec.Only(field, values)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: invalid --only: %v\n", name, err)
			return nil, nil, exitUsage
		}
	}
	cells, err := spec.Cells()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s: %v\n", name, o.file, err)
		return nil, nil, exitUsage
	}
	if len(cells) == 0 {
		fmt.Fprintf(stderr, "%s: no cell to run (check --only)\n", name)
		return nil, nil, exitUsage
	}
	return spec, cells, exitOK
}

// runSweep runs a parsed command line; runner replaces simnet.Run in tests.
func runSweep(ctx context.Context, name string, o sweepOptions, runner sweep.Runner, stdout, stderr io.Writer) int {
	if o.workers < 1 {
		fmt.Fprintf(stderr, "%s: invalid --workers: %d, must be at least 1\n", name, o.workers)
		return exitUsage
	}
	spec, cells, code := loadSweep(name, o, stderr)
	if spec == nil {
		return code
	}
	out := o.out
	if out == "" {
		out = filepath.Join("out", spec.Name)
	}
	if o.dryRun {
		return dryRun(spec, cells, out, stdout, stderr)
	}
	if err := checkWritableDir(out); err != nil {
		fmt.Fprintf(stderr, "%s: invalid --out: %v\n", name, err)
		return exitUsage
	}

	prog := newSweepProgress(stderr, o.quiet, cells, out)
	results := sweep.Execute(ctx, cells, sweep.Options{
		Dir:      out,
		Parallel: o.workers,
		Run:      runner,
		Event:    prog.event,
	})
	prog.finish()

	sum := sweep.Summarize(spec, results)
	plots, err := sum.WriteAll(out)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	if err := sum.WriteSummaryMD(stdout); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
	var failed, notRun, cached int
	for _, r := range results {
		switch r.Status {
		case sweep.Failed:
			failed++
			fmt.Fprintf(stderr, "%s: cell %d (%s) failed: %v\n", name, r.Index+1, r.Label(), r.Err)
		case sweep.NotRun:
			notRun++
		case sweep.Cached:
			cached++
		}
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "%s: %d cells (%d cached, %d run, %d failed, %d not run); wrote %s, %s, %s and %d plots in %s\n",
			name, len(results), cached, len(results)-cached-failed-notRun, failed, notRun,
			sweep.SummaryCSV, sweep.RunsCSV, sweep.SummaryMD, len(plots), out)
	}
	if notRun > 0 {
		fmt.Fprintf(stderr, "%s: interrupted: %d cells not run; the summary is partial. Run the same command again to resume.\n", name, notRun)
	}
	if failed > 0 || notRun > 0 {
		return exitFailure
	}
	return exitOK
}

// dryRun lists the cells and which of them the cache holds.
func dryRun(spec *sweep.Spec, cells []sweep.Cell, out string, stdout, stderr io.Writer) int {
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "cell\tstatus\thash\tgrid\tsettings")
	cached, rounds := 0, 0
	groups := map[string]bool{}
	for _, c := range cells {
		status := "to run"
		if _, ok := sweep.LoadCached(out, c); ok {
			status = "cached"
			cached++
		} else {
			rounds += c.Config.Rounds
		}
		groups[c.Group] = true
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.Index+1, status, c.Hash, c.Grid, c.Label())
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintf(stderr, "node sweep: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "\nsweep %s: %d cells in %d groups; %d cached in %s, %d to run (%d rounds)\n",
		spec.Name, len(cells), len(groups), cached, sweep.CellsDir(out), len(cells)-cached, rounds)
	return exitOK
}

// sweepProgress shows a sweep's progress on stderr: on a terminal, one
// line redrawn in place (cells done, a bar of the rounds done, the ETA and
// the latest round); otherwise a line per finished cell.
type sweepProgress struct {
	mu    sync.Mutex
	w     io.Writer
	off   bool
	tty   bool
	now   func() time.Time
	start time.Time

	cells       int // in the sweep
	done        int // finished (run, failed or cached)
	cached      int
	failed      int
	totalRounds int // of the cells to run
	doneRounds  int
	cellRounds  map[int]int // rounds seen of each running cell
	drawn       bool
}

func newSweepProgress(w io.Writer, quiet bool, cells []sweep.Cell, dir string) *sweepProgress {
	p := &sweepProgress{w: w, off: quiet, tty: isTerminal(w), now: time.Now, start: time.Now(),
		cells: len(cells), cellRounds: map[int]int{}}
	for _, c := range cells {
		p.totalRounds += c.Config.Rounds
	}
	return p
}

// eta is the time left at the pace of the rounds run so far.
func (p *sweepProgress) eta() string {
	if p.doneRounds == 0 {
		return "?"
	}
	perRound := p.now().Sub(p.start).Seconds() / float64(p.doneRounds)
	return fmtETA(time.Duration(perRound * float64(max(p.totalRounds-p.doneRounds, 0)) * float64(time.Second)))
}

func (p *sweepProgress) event(e sweep.Event) {
	if p.off {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Kind {
	case sweep.CellCached:
		p.done++
		p.cached++
		p.totalRounds -= e.Cell.Config.Rounds
		if !p.tty && p.cached == 1 {
			fmt.Fprintln(p.w, "cached cells are skipped")
		}
		return
	case sweep.CellStarted:
		p.cellRounds[e.Cell.Index] = 0
		if p.done == p.cached && len(p.cellRounds) == 1 {
			p.start = p.now() // the pace counts from the first run
		}
		return
	case sweep.CellRound:
		p.cellRounds[e.Cell.Index]++
		p.doneRounds++
		if p.tty {
			p.draw(fmt.Sprintf("%s: round %d/%d acc %.4f", e.Cell.Label(), e.Round.Round, e.Rounds, e.Round.Accuracy))
		}
		return
	case sweep.CellFinished:
		r := e.Result
		// A cell that stopped early counts its rounds as done.
		p.doneRounds += max(0, r.Config.Rounds-p.cellRounds[e.Cell.Index])
		delete(p.cellRounds, e.Cell.Index)
		p.done++
		var res string
		switch {
		case r.Status == sweep.Failed:
			p.failed++
			res = "FAILED: " + r.Err.Error()
		case r.Report != nil:
			res = fmt.Sprintf("final %.4f (%.1f s)", r.Report.FinalAccuracy, r.Report.WallSeconds)
		default:
			res = "interrupted"
		}
		line := fmt.Sprintf("[%d/%d] %s: %s", p.done, p.cells, e.Cell.Label(), res)
		if p.tty {
			p.draw(line)
		} else {
			fmt.Fprintf(p.w, "%s, ETA %s\n", line, p.eta())
		}
	}
}

// draw redraws the terminal line, ending with what.
func (p *sweepProgress) draw(what string) {
	filled := barWidth
	if p.totalRounds > 0 {
		filled = min(barWidth, barWidth*p.doneRounds/p.totalRounds)
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	extra := ""
	if p.cached > 0 {
		extra += fmt.Sprintf(", %d cached", p.cached)
	}
	if p.failed > 0 {
		extra += fmt.Sprintf(", %d failed", p.failed)
	}
	fmt.Fprintf(p.w, "\rcells %d/%d%s [%s] ETA %s | %s\x1b[K", p.done, p.cells, extra, bar, p.eta(), what)
	p.drawn = true
}

func (p *sweepProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

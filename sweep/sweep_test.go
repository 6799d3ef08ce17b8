package sweep

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/sweeps"
)

const gridTOML = `
name = "t"
description = "a test grid"
fractions = [0, 0.2]
seeds = [1, 2, 3]

[base]
peers = 100
per_round = 10
rounds = 6

[[grid]]
name = "frl"
scenarios = ["frl-mnist"]
aggregators = ["vote", "vote-robust"]
attacks = ["reverse", "random"]

[[grid]]
name = "dense"
scenarios = ["fedavg-mnist"]
aggregators = ["median"]
attacks = ["signflip"]
nets = ["ideal", "wan"]
[grid.base]
rounds = 4

[table]
rows = ["scenario", "aggregator"]
columns = ["attack", "attackers"]
`

func mustParse(t *testing.T, name, text string) *Spec {
	t.Helper()
	s, err := Parse(name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustCells(t *testing.T, s *Spec) []Cell {
	t.Helper()
	cells, err := s.Cells()
	if err != nil {
		t.Fatal(err)
	}
	return cells
}

func TestParseAndExpand(t *testing.T) {
	s := mustParse(t, "x.toml", gridTOML)
	if s.Name != "t" || s.Description != "a test grid" || len(s.Grids) != 2 {
		t.Fatalf("spec %+v", s)
	}
	cells := mustCells(t, s)
	// frl: 2 aggregators x (baseline + 2 attacks x 0.2) x 3 seeds = 18;
	// dense: 2 nets x (baseline + signflip 0.2) x 3 seeds = 12.
	if len(cells) != 30 {
		t.Fatalf("%d cells, want 30", len(cells))
	}
	var labels []string
	for _, c := range cells[:9] {
		labels = append(labels, c.Label())
	}
	want := []string{
		"frl-mnist vote no attack seed 1", "frl-mnist vote no attack seed 2", "frl-mnist vote no attack seed 3",
		"frl-mnist vote reverse 20% seed 1", "frl-mnist vote reverse 20% seed 2", "frl-mnist vote reverse 20% seed 3",
		"frl-mnist vote random 20% seed 1", "frl-mnist vote random 20% seed 2", "frl-mnist vote random 20% seed 3",
	}
	if !reflect.DeepEqual(labels, want) {
		t.Errorf("first cells\n%q\nwant\n%q", labels, want)
	}
	for i, c := range cells {
		if c.Index != i {
			t.Errorf("cell %d has index %d", i, c.Index)
		}
		// Effective configs: the base, the scenario's defaults, the axes.
		if c.Config.Peers != 100 || c.Config.PerRound != 10 || c.Config.Quorum != 1 || c.Config.Partition != "dirichlet:1.0" {
			t.Errorf("cell %s: config %+v", c.Label(), c.Config)
		}
		wantRounds := 6
		if c.Grid == "dense" {
			wantRounds = 4 // the grid's base overrides the file's
		}
		if c.Config.Rounds != wantRounds {
			t.Errorf("cell %s: %d rounds, want %d", c.Label(), c.Config.Rounds, wantRounds)
		}
		if c.Config.Attackers == 0 && c.Config.Attack != "" {
			t.Errorf("cell %s: attack %q without attackers", c.Label(), c.Config.Attack)
		}
	}
	last := cells[len(cells)-1]
	if last.Grid != "dense" || last.Config.Net != "wan" || last.Config.Attack != "signflip" || last.Config.Seed != 3 {
		t.Errorf("last cell %+v", last.Config)
	}

	// The same grid in JSON, with the only grid's axes at the top level.
	js := `{"name": "j", "base": {"peers": 100, "rounds": 2, "attackers": 0.3, "attack": "reverse"},
		"aggregators": ["vote", "vote-median"], "seeds": [5, 6], "vary": {"crash": [0, 0.1], "per_round": [5, 10]}}`
	cells = mustCells(t, mustParse(t, "x.json", js))
	if len(cells) != 16 {
		t.Fatalf("JSON: %d cells, want 16", len(cells))
	}
	if l := cells[3].Label(); l != "vote per_round=5 crash=0.1 seed 6" {
		t.Errorf("cell 4: %q", l)
	}
	if c := cells[3].Config; c.Aggregator != "vote" || c.Crash != 0.1 || c.PerRound != 5 || c.Seed != 6 || c.Attackers != 0.3 {
		t.Errorf("cell 4: %+v", c)
	}
}

func TestGroups(t *testing.T) {
	cells := mustCells(t, mustParse(t, "x.toml", gridTOML))
	groups := map[string][]uint64{}
	var order []string
	for _, c := range cells {
		if _, ok := groups[c.Group]; !ok {
			order = append(order, c.Group)
		}
		groups[c.Group] = append(groups[c.Group], c.Config.Seed)
	}
	if len(groups) != 10 {
		t.Fatalf("%d groups, want 10", len(groups))
	}
	for _, g := range order {
		if !reflect.DeepEqual(groups[g], []uint64{1, 2, 3}) {
			t.Errorf("group %s has seeds %v", g, groups[g])
		}
	}
}

func TestHash(t *testing.T) {
	cells := mustCells(t, mustParse(t, "x.toml", gridTOML))
	base := cells[4].Config
	h := Hash(base)
	if len(h) != 24 {
		t.Errorf("hash %q", h)
	}
	// Stable: the same config, in another process or run, hashes the same.
	// (A change to this value means every cached cell reruns: change
	// hashVersion on purpose, never by accident.)
	fixed := simnet.Config{Scenario: "frl-mnist", Peers: 1000, PerRound: 25, Rounds: 30, Seed: 1,
		Partition: "dirichlet:1.0", Aggregator: "vote-robust", Net: "ideal", Quorum: 1, RoundTimeoutMs: 600_000}
	if got := Hash(fixed); got != "138303ba65739587e9942f2a" {
		t.Errorf("Hash of the frl-mnist defaults is %s; did the encoding change?", got)
	}
	if Hash(base) != h {
		t.Error("the hash is not stable")
	}
	// Workers never change results, so they do not change the hash.
	w := base
	w.Workers = 7
	if Hash(w) != h {
		t.Error("workers changed the hash")
	}
	// Any other setting does.
	seen := map[string]string{h: "base"}
	for _, field := range Fields() {
		if slices.Contains(hashIgnored, field) {
			continue
		}
		c := base
		v := reflect.ValueOf(&c).Elem().Field(configFields[field].index)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Float64:
			v.SetFloat(v.Float() + 0.01)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		default:
			t.Logf("field %s of kind %v not checked: extend this test", field, v.Kind())
			continue
		}
		hh := Hash(c)
		if prev, dup := seen[hh]; dup {
			t.Errorf("changing %s gives the hash of %s", field, prev)
		}
		seen[hh] = field
	}
	// Groups: the same for every seed, different otherwise.
	s2 := base
	s2.Seed = 99
	if GroupHash(s2) != GroupHash(base) || Hash(s2) == h {
		t.Error("seed: same group, different cell expected")
	}
	a := base
	a.Aggregator = "vote-median"
	if GroupHash(a) == GroupHash(base) {
		t.Error("another aggregator in the same group")
	}
}

// TestBadFiles checks that every kind of bad input is an error naming
// where it is.
func TestBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, text, field, msg string
	}{
		{"x.toml", `seeds = [1,`, "", "malformed TOML"},
		{"x.json", "{\n\"seeds\": [1,]}", "", "line 2"},
		{"x.yaml", `seeds: [1]`, "", "not \".yaml\""},
		{"x.toml", `bogus = 1`, "bogus", "unknown key"},
		{"x.toml", "[base]\npeerz = 3", "base.peerz", "unknown setting"},
		{"x.toml", "[base]\npeers = \"many\"", "base.peers", "want an integer"},
		{"x.toml", "[base]\npeers = 2.5", "base.peers", "want an integer"},
		{"x.toml", `seeds = [-1]`, "seeds[1]", "non-negative integer"},
		{"x.toml", `seeds = []`, "seeds", "empty list"},
		{"x.toml", `seeds = 3`, "seeds", "want a list"},
		{"x.toml", `seeds = [1, 1]`, "seeds[2]", "listed twice"},
		{"x.toml", `fractions = [0, 1.5]`, "fractions[2]", "not a fraction in [0, 1]"},
		{"x.toml", `fractions = [-0.1]`, "fractions[1]", "not a fraction in [0, 1]"},
		{"x.toml", "[vary]\nbogus = [1]", "vary.bogus", "unknown setting"},
		{"x.toml", "[vary]\nseed = [1]", "vary.seed", "give it as seeds"},
		{"x.toml", "[vary]\ncrash = 0.1", "vary.crash", "want a list"},
		{"x.toml", "seeds = [1]\n[base]\nseed = 2", "base.seed", "also an axis"},
		{"x.toml", "[[grid]]\nbogus = 1", "grid[1].bogus", "unknown key"},
		{"x.toml", "[[grid]]\naggregators = [\"vote\"]\n[[grid]]\n[grid.base]\nrounds = \"x\"", "grid[2].base.rounds", "want an integer"},
		{"x.toml", "[plot]\nband = \"iqr\"", "plot.band", "sd"},
		{"x.toml", "[plot]\nlines = \"colour\"", "plot.lines", "JSON name"},
		{"x.toml", "[plot]\nmetrics = [\"accuracy\", \"joy\"]", "plot.metrics[2]", "unknown metric"},
		{"x.toml", "[table]\nrows = [\"aggregator\"]\ncolumns = [\"nope\"]", "table.columns[1]", "unknown setting"},
		{"x.toml", "[table]\nrows = [\"aggregator\"]\ncolumns = [\"attack\"]\nmetric = \"joy\"", "table.metric", "unknown metric"},
	} {
		_, err := Parse(tc.name, []byte(tc.text))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s %q: error %v; want a FieldError on %q saying %q", tc.name, tc.text, err, tc.field, tc.msg)
		}
	}
}

// TestBadCells checks the errors simnet.Resolve finds, named where the file
// gives the value.
func TestBadCells(t *testing.T) {
	for _, tc := range []struct {
		text, field, msg string
	}{
		{`scenarios = ["nope"]`, "scenarios", `unknown scenario "nope"`},
		{"[base]\nscenario = \"nope\"", "base.scenario", `unknown scenario "nope"`},
		{`aggregators = ["vote", "median"]`, "aggregators", `has no aggregator "median"`},
		{"fractions = [0.2]\nattacks = [\"reverse\", \"nope\"]", "attacks", `unknown attack "nope"`},
		{"fractions = [0.2]\nattacks = [\"signflip\"]", "attacks", "does not apply"},
		{"fractions = [0.6]\nattacks = [\"reverse\"]", "fractions", "[0, 0.5)"},
		{`fractions = [0.2]`, "base.attack", "without an attack"},
		{`nets = ["ideal", "mars"]`, "nets", "unknown network profile"},
		{"[base]\npeers = 5\nper_round = 6", "base.per_round", "must be in [1, peers=5]"},
		{"[vary]\nper_round = [10, 2000]", "vary.per_round", "must be in [1, peers=1000]"},
		{`seeds = [0, 1]`, "seeds", "0 would mean the scenario's default (1)"},
		{"[base]\nrounds = 0", "base.rounds", "0 would mean the scenario's default (30)"},
		{"[[grid]]\n[[grid]]\naggregators = [\"fedavg\"]", "grid[2].aggregators", `has no aggregator "fedavg"`},
	} {
		s, err := Parse("x.toml", []byte(tc.text))
		if err == nil {
			_, err = s.Cells()
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v; want a FieldError on %q saying %q", tc.text, err, tc.field, tc.msg)
		}
	}
}

func TestSetAndFilter(t *testing.T) {
	s := mustParse(t, "x.toml", gridTOML)
	if err := s.Set("rounds", []any{3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("seed", []any{uint64(7)}); err != nil {
		t.Fatal(err)
	}
	v, err := ParseValue("attackers", "0.3")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set("attackers", []any{0.0, v}); err != nil {
		t.Fatal(err)
	}
	cells := mustCells(t, s)
	if len(cells) != 10 {
		t.Fatalf("%d cells, want 10", len(cells))
	}
	for _, c := range cells {
		if c.Config.Rounds != 3 || c.Config.Seed != 7 || (c.Config.Attackers != 0 && c.Config.Attackers != 0.3) {
			t.Errorf("cell %s: %+v", c.Label(), c.Config)
		}
	}
	only := func(field string, values ...any) []Cell {
		t.Helper()
		s2 := *s
		s2.filters = nil
		if err := s2.Only(field, values); err != nil {
			t.Fatal(err)
		}
		return mustCells(t, &s2)
	}
	// The baselines pass an attack filter: 2 frl baselines + 2 reverse, 2 dense baselines.
	if got := only("attack", "reverse"); len(got) != 6 {
		t.Errorf("attack filter kept %d cells, want 6", len(got))
	}
	if got := only("aggregator", "median"); len(got) != 4 {
		t.Errorf("aggregator filter kept %d cells, want 4", len(got))
	}
	// A filter on a field the file leaves to the scenario: after resolving.
	if got := only("quorum", 1.0); len(got) != 10 {
		t.Errorf("quorum filter kept %d cells, want 10", len(got))
	}
	if got := only("partition", "iid"); len(got) != 0 {
		t.Errorf("partition filter kept %d cells, want 0", len(got))
	}
	if err := s.Only("nope", []any{1}); err == nil {
		t.Error("a filter on an unknown setting")
	}
	// Cells filtered out are not resolved: an unknown attack left out is no error.
	bad := mustParse(t, "x.toml", "fractions = [0, 0.2]\nattacks = [\"reverse\", \"nope\"]")
	if err := bad.Only("attack", []any{"reverse"}); err != nil {
		t.Fatal(err)
	}
	if cells := mustCells(t, bad); len(cells) != 2 {
		t.Errorf("%d cells, want 2", len(cells))
	}
	if _, err := ParseValue("peers", "ten"); err == nil || !strings.Contains(err.Error(), "want an integer") {
		t.Errorf("ParseValue: %v", err)
	}
	if v, err := ParseValue("partition", "dirichlet:0.5"); err != nil || v != "dirichlet:0.5" {
		t.Errorf("ParseValue(partition): %v, %v", v, err)
	}
}

func TestDescribe(t *testing.T) {
	// 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample sd sqrt(32/7).
	s := Describe([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	sd := math.Sqrt(32.0 / 7)
	if s.N != 8 || s.Mean != 5 || math.Abs(s.SD-sd) > 1e-12 {
		t.Errorf("Describe: %+v, want mean 5, sd %v", s, sd)
	}
	// t(0.975, 7) = 2.364624.
	if hw := s.HalfWidth(); math.Abs(hw-2.364624*sd/math.Sqrt(8)) > 1e-5 {
		t.Errorf("half width %v", hw)
	}
	for df, want := range map[int]float64{1: 12.7062, 2: 4.3027, 4: 2.7764, 29: 2.0452, 1000: 1.9623} {
		if got := TQuantile975(df); math.Abs(got-want) > 1e-4 {
			t.Errorf("t(0.975, %d) = %v, want %v", df, got, want)
		}
	}
	// Three seeds: the 95% interval is mean ± 4.303 sd/sqrt(3).
	s = Describe([]float64{0.90, 0.92, 0.94})
	if math.Abs(s.Mean-0.92) > 1e-12 || math.Abs(s.SD-0.02) > 1e-12 || math.Abs(s.Lo-(0.92-4.302653*0.02/math.Sqrt(3))) > 1e-6 {
		t.Errorf("three seeds: %+v", s)
	}
	one := Describe([]float64{0.5, math.NaN()})
	if one.N != 1 || one.Mean != 0.5 || !math.IsNaN(one.SD) || !math.IsNaN(one.Lo) {
		t.Errorf("one value: %+v", one)
	}
	if none := Describe(nil); none.N != 0 || !math.IsNaN(none.Mean) {
		t.Errorf("no values: %+v", none)
	}
	r := &report.Report{}
	for i := 1; i <= 7; i++ { // the last third of 7 rounds is the last 3
		r.Rounds = append(r.Rounds, report.RoundReport{Round: uint64(i), Accuracy: float64(i) / 10})
	}
	if got := LastThirdAccuracy(r); math.Abs(got-0.6) > 1e-12 {
		t.Errorf("LastThirdAccuracy = %v, want 0.6", got)
	}
}

// fakeRun stands in for simnet.Run: a report whose numbers depend on the
// config (accuracy grows with the seed, falls with attackers), instantly.
type fakeRun struct {
	calls atomic.Int64
	mu    sync.Mutex
	seen  []simnet.Config
	fail  func(simnet.Config) error
}

func (f *fakeRun) run(_ context.Context, cfg simnet.Config, obs simnet.Observer) (*simnet.Report, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.seen = append(f.seen, cfg)
	f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(cfg); err != nil {
			return nil, err
		}
	}
	r := &simnet.Report{Scenario: cfg.Scenario, Seed: cfg.Seed, Config: cfg, WallSeconds: 1 + float64(cfg.Seed)}
	for i := 1; i <= cfg.Rounds; i++ {
		acc := 0.5 + 0.1*float64(i)/float64(cfg.Rounds) + 0.01*float64(cfg.Seed) - cfg.Attackers
		rr := report.RoundReport{Round: uint64(i), Accuracy: acc, Loss: 1 - acc, Selected: cfg.PerRound, Accepted: cfg.PerRound,
			BytesUp: int64(1000 * cfg.PerRound), BytesDown: 5000}
		if obs != nil {
			obs(rr, cfg.Rounds)
		}
		r.Rounds = append(r.Rounds, rr)
		r.FinalAccuracy, r.BestAccuracy = acc, max(r.BestAccuracy, acc)
		r.BytesUpTotal += rr.BytesUp
	}
	r.BytesUpPerUpdate = 1000
	r.Model.Hash = fmt.Sprintf("%x", cfg.Seed)
	return r, nil
}

func TestResume(t *testing.T) {
	dir := t.TempDir()
	cells := mustCells(t, mustParse(t, "x.toml", gridTOML))
	f := &fakeRun{}
	var events []EventKind
	res := Execute(context.Background(), cells, Options{Dir: dir, Parallel: 3, Cores: 2, Run: f.run,
		Event: func(e Event) { events = append(events, e.Kind) }})
	if n := f.calls.Load(); n != int64(len(cells)) {
		t.Fatalf("%d runs, want %d", n, len(cells))
	}
	for _, r := range res {
		if r.Status != Ran || r.Report == nil {
			t.Fatalf("cell %s: %s %v", r.Label(), r.Status, r.Err)
		}
		if _, err := os.Stat(CachePath(dir, r.Cell)); err != nil {
			t.Errorf("cell %s not cached: %v", r.Label(), err)
		}
	}
	if k := slices.Index(events, CellFinished); k < 0 || !slices.Contains(events, CellRound) {
		t.Errorf("events %v", events)
	}
	// 2 cores among 3 cells at once: 1 worker each, except the last cell
	// if the others have finished when it starts (it gets the freed cores:
	// that depends on timing).
	ones := 0
	for _, cfg := range f.seen {
		if cfg.Workers < 1 || cfg.Workers > 2 {
			t.Errorf("a cell ran with %d workers, want 1 or 2", cfg.Workers)
		}
		if cfg.Workers == 1 {
			ones++
		}
	}
	if ones < len(cells)-1 {
		t.Errorf("%d of %d cells ran with 1 worker; all but the last should", ones, len(cells))
	}

	// Everything cached: nothing runs.
	f2 := &fakeRun{}
	res = Execute(context.Background(), cells, Options{Dir: dir, Run: f2.run})
	if n := f2.calls.Load(); n != 0 {
		t.Errorf("a second sweep ran %d cells", n)
	}
	for _, r := range res {
		if r.Status != Cached || r.Report == nil || r.Report.Model.Hash != fmt.Sprintf("%x", r.Config.Seed) {
			t.Errorf("cell %s: %s", r.Label(), r.Status)
		}
		if _, err := report.ConfigAs[simnet.Config](r.Report); err != nil {
			t.Error(err)
		}
	}

	// Delete one cell and corrupt another: only those two run again.
	if err := os.Remove(CachePath(dir, cells[5])); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(CachePath(dir, cells[7]), []byte(`{"config": {"peers": 3}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f3 := &fakeRun{}
	res = Execute(context.Background(), cells, Options{Dir: dir, Run: f3.run})
	if n := f3.calls.Load(); n != 2 {
		t.Errorf("resumed sweep ran %d cells, want 2", n)
	}
	for _, cfg := range f3.seen {
		if h := Hash(cfg); h != cells[5].Hash && h != cells[7].Hash {
			t.Errorf("reran %+v", cfg)
		}
		if cfg.Workers != 1 && cfg.Workers != 2 {
			t.Errorf("workers %d", cfg.Workers)
		}
	}
	if res[5].Status != Ran || res[7].Status != Ran || res[6].Status != Cached {
		t.Errorf("statuses %s %s %s", res[5].Status, res[6].Status, res[7].Status)
	}

	// A changed setting is a new cell.
	s := mustParse(t, "x.toml", gridTOML)
	if err := s.Set("rounds", []any{5}); err != nil {
		t.Fatal(err)
	}
	f4 := &fakeRun{}
	Execute(context.Background(), mustCells(t, s), Options{Dir: dir, Run: f4.run})
	if n := f4.calls.Load(); n != 30 {
		t.Errorf("after changing rounds %d cells ran, want 30", n)
	}
}

func TestFailuresAndInterrupt(t *testing.T) {
	dir := t.TempDir()
	cells := mustCells(t, mustParse(t, "x.toml", gridTOML))
	f := &fakeRun{fail: func(c simnet.Config) error {
		if c.Aggregator == "median" && c.Seed == 2 {
			return errors.New("boom")
		}
		return nil
	}}
	res := Execute(context.Background(), cells, Options{Dir: dir, Parallel: 2, Run: f.run})
	failed := 0
	for _, r := range res {
		if r.Status == Failed {
			failed++
			if r.Err == nil || r.Err.Error() != "boom" {
				t.Errorf("failed cell error %v", r.Err)
			}
			if _, err := os.Stat(CachePath(dir, r.Cell)); err == nil {
				t.Error("a failed cell was cached")
			}
		}
	}
	if failed != 4 {
		t.Errorf("%d failed cells, want 4", failed)
	}
	sum := Summarize(&Spec{Name: "t"}, res)
	var buf bytes.Buffer
	if err := sum.WriteSummaryMD(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "2 (1 failed)") {
		t.Errorf("summary does not count the failures:\n%s", buf.String())
	}

	// A cancelled sweep runs nothing more and caches nothing it did not finish.
	ctx, cancel := context.WithCancel(context.Background())
	dir2 := t.TempDir()
	var n atomic.Int64
	run := func(ctx context.Context, cfg simnet.Config, obs simnet.Observer) (*simnet.Report, error) {
		if n.Add(1) == 3 {
			cancel()
			return nil, ctx.Err()
		}
		return f.run(ctx, cfg, obs)
	}
	res = Execute(ctx, cells, Options{Dir: dir2, Parallel: 1, Run: run})
	ran, notRun := 0, 0
	for _, r := range res {
		switch r.Status {
		case Ran:
			ran++
		case NotRun:
			notRun++
		}
	}
	if ran != 2 || notRun != len(cells)-2 || n.Load() != 3 {
		t.Errorf("after cancelling: %d ran, %d not run, %d calls", ran, notRun, n.Load())
	}
	entries, _ := os.ReadDir(CellsDir(dir2))
	if len(entries) != 2 {
		t.Errorf("%d cached cells, want 2", len(entries))
	}
}

func TestOutputs(t *testing.T) {
	dir := t.TempDir()
	spec := mustParse(t, "x.toml", gridTOML)
	cells := mustCells(t, spec)
	f := &fakeRun{}
	res := Execute(context.Background(), cells, Options{Dir: dir, Run: f.run})
	sum := Summarize(spec, res)
	if want := []string{"scenario", "aggregator", "attack", "attackers", "net", "rounds"}; !reflect.DeepEqual(sum.Fields, want) {
		t.Errorf("fields %v, want %v", sum.Fields, want)
	}
	plots, err := sum.WriteAll(dir)
	if err != nil {
		t.Fatal(err)
	}

	// summary.csv: a row per group; known numbers: seeds 1, 2, 3 add
	// 0.01 x seed to the final accuracy 0.6 - attackers.
	recs := readCSV(t, filepath.Join(dir, SummaryCSV))
	if len(recs) != 11 {
		t.Fatalf("summary.csv has %d rows, want 10 and a header", len(recs)-1)
	}
	col := func(name string) int {
		i := slices.Index(recs[0], name)
		if i < 0 {
			t.Fatalf("summary.csv lacks %s: %v", name, recs[0])
		}
		return i
	}
	row := recs[2] // frl-mnist vote reverse 0.2
	if row[col("aggregator")] != "vote" || row[col("attack")] != "reverse" || row[col("attackers")] != "0.2" || row[col("seeds")] != "1 2 3" || row[col("runs")] != "3" {
		t.Errorf("row 2: %v", row)
	}
	checkNum(t, row[col("final_accuracy_mean")], 0.42)
	checkNum(t, row[col("final_accuracy_sd")], 0.01)
	checkNum(t, row[col("final_accuracy_ci95_lo")], 0.42-4.302653*0.01/math.Sqrt(3))
	checkNum(t, row[col("final_accuracy_ci95_hi")], 0.42+4.302653*0.01/math.Sqrt(3))
	checkNum(t, row[col("wall_seconds_mean")], 3)
	checkNum(t, row[col("bytes_up_per_update_mean")], 1000)
	// Last third of 6 rounds: rounds 5 and 6, mean accuracy 0.5 + 0.1 x 11/12 + 0.02 - 0.2.
	checkNum(t, row[col("last_third_accuracy_mean")], 0.5+0.1*11/12+0.02-0.2)

	runs := readCSV(t, filepath.Join(dir, RunsCSV))
	if len(runs) != 31 {
		t.Fatalf("runs.csv has %d rows, want 30 and a header", len(runs)-1)
	}
	if h := runs[0]; h[0] != "cell" || !slices.Contains(h, "final_accuracy") || !slices.Contains(h, "seed") || !slices.Contains(h, "model_hash") {
		t.Errorf("runs.csv header %v", h)
	}
	if r := runs[4]; r[slices.Index(runs[0], "status")] != "ran" || r[slices.Index(runs[0], "seed")] != "1" || r[slices.Index(runs[0], "workers")] == "" {
		t.Errorf("runs.csv row 4: %v", r)
	}

	md, err := os.ReadFile(filepath.Join(dir, SummaryMD))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"## Sweep t", "a test grid", "30 runs in 10 groups over 3 seeds",
		"| scenario | aggregator | attack | attackers | net | rounds | seeds | final accuracy |",
		"| frl-mnist | vote | reverse | 20% | ideal | 6 | 3 | 0.4200 ± 0.0248 |",
		"| fedavg-mnist | median | no attack | - | wan | 4 | 3 |",
		"final accuracy by attack and attackers",
		"| scenario | aggregator | no attack | reverse 20% | random 20% | signflip 20% |",
		"| frl-mnist | vote | 0.6200 ± 0.0248 | 0.4200 ± 0.0248 | 0.4200 ± 0.0248 | - |",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}

	// Plots: accuracy and loss, a chart per panel (scenario, attack,
	// attackers, net, rounds: 3 frl, 2 x 2 dense), a line per aggregator.
	if sum.LinesField() != "aggregator" {
		t.Errorf("lines field %q", sum.LinesField())
	}
	if len(plots) != 2*len(sum.panels()) || len(sum.panels()) != 7 {
		t.Errorf("%d plots for %d panels: %v", len(plots), len(sum.panels()), plots)
	}
	for _, p := range plots {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := png.Decode(bytes.NewReader(b)); err != nil || len(b) < 1000 {
			t.Errorf("%s: %d bytes, %v", p, len(b), err)
		}
	}
	if !slices.Contains(plots, filepath.Join(dir, PlotsDir, "accuracy-frl-mnist-reverse-20-ideal-rounds-6.png")) {
		t.Errorf("plots %v", plots)
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func checkNum(t *testing.T, s string, want float64) {
	t.Helper()
	var got float64
	if _, err := fmt.Sscan(s, &got); err != nil || math.Abs(got-want) > 1e-6 {
		t.Errorf("%q, want %v", s, want)
	}
}

// TestRepoSweeps checks the sweep files of the repository: they parse, and
// every cell resolves, the attacks not registered yet aside.
func TestRepoSweeps(t *testing.T) {
	known := map[string]bool{}
	for _, a := range simnet.Attacks() {
		known[a.Name] = true
	}
	for name, want := range map[string]int{sweeps.Robustness: 312, sweeps.Smoke: 12} {
		b, err := sweeps.Files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		s := mustParse(t, name, string(b))
		missing := 0
		for i := range s.Grids {
			for j := range s.Grids[i].Axes {
				a := &s.Grids[i].Axes[j]
				if a.Field != "attack" {
					continue
				}
				a.Values = slices.DeleteFunc(a.Values, func(v any) bool {
					if !known[v.(string)] {
						t.Logf("%s: attack %q is not registered yet: left out", name, v)
						missing++
						return true
					}
					return false
				})
			}
		}
		cells := mustCells(t, s)
		if missing == 0 && len(cells) != want {
			t.Errorf("%s: %d cells, want %d", name, len(cells), want)
		}
	}
}

// TestSmokeSweep runs sweeps/smoke.toml for real.
func TestSmokeSweep(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs 12 simulations on MNIST")
	}
	b, err := sweeps.Files.ReadFile(sweeps.Smoke)
	if err != nil {
		t.Fatal(err)
	}
	spec := mustParse(t, sweeps.Smoke, string(b))
	cells := mustCells(t, spec)
	dir := t.TempDir()
	res := Execute(context.Background(), cells, Options{Dir: dir})
	for _, r := range res {
		if r.Status != Ran {
			t.Fatalf("cell %s: %s %v", r.Label(), r.Status, r.Err)
		}
		if len(r.Report.Rounds) != 2 || r.Report.FinalAccuracy < 0.2 {
			t.Errorf("cell %s: %d rounds, accuracy %v", r.Label(), len(r.Report.Rounds), r.Report.FinalAccuracy)
		}
	}
	// The same seed and settings give the same model, whatever the workers.
	again := Execute(context.Background(), cells[:1], Options{Dir: t.TempDir(), Cores: 1})
	if again[0].Report.Model.Hash != res[0].Report.Model.Hash {
		t.Error("a rerun of cell 1 gave another model")
	}
	plots, err := Summarize(spec, res).WriteAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(plots) == 0 {
		t.Error("no plots")
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/sweep"
)

// fakeReport is a report of cfg's rounds ending at accuracy acc.
func fakeReport(cfg simnet.Config, acc float64) *simnet.Report {
	r := &simnet.Report{Scenario: cfg.Scenario, Seed: cfg.Seed, Config: cfg, WallSeconds: 1}
	for i := 1; i <= cfg.Rounds; i++ {
		a := acc * float64(i) / float64(cfg.Rounds)
		r.Rounds = append(r.Rounds, report.RoundReport{Round: uint64(i), Accuracy: a, Loss: 1 - a, Selected: cfg.PerRound, Accepted: cfg.PerRound})
		r.FinalAccuracy, r.BestAccuracy = a, a
	}
	return r
}

// scalarSweep is a sweep of the fake scenario: 2 partitions x 2 crash
// probabilities x 3 seeds = 12 runs of microseconds each.
const scalarSweep = `
name = "scalar"
seeds = [1, 2, 3]
[base]
scenario = "test-scalar"
rounds = 3
[vary]
partition = ["iid", "dirichlet:0.5"]
crash = [0, 0.2]
`

func writeSweepFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSweepCLI(t *testing.T) {
	file := writeSweepFile(t, "scalar.toml", scalarSweep)
	out := filepath.Join(t.TempDir(), "out")

	// --dry-run lists the cells and runs none.
	code, stdout, stderr := runCLI("sweep", file, "--out", out, "--dry-run")
	if code != exitOK || !strings.Contains(stdout, "12 cells in 4 groups; 0 cached") ||
		!strings.Contains(stdout, "partition=dirichlet:0.5 crash=0.2 seed 3") {
		t.Fatalf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a dry run wrote the output directory")
	}

	// The sweep: real (fake-scenario) runs.
	code, stdout, stderr = runCLI("sweep", "--out", out, "--workers", "3", file)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"## Sweep scalar", "12 runs in 4 groups over 3 seeds",
		"| scenario | aggregator | partition | crash | seeds | final accuracy |",
		"| test-scalar | average | iid | 0 | 3 | 0.8750 ± 0.0000 |"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "[12/12]") || !strings.Contains(stderr, "12 cells (0 cached, 12 run, 0 failed, 0 not run)") {
		t.Errorf("stderr:\n%s", stderr)
	}
	for _, f := range []string{sweep.SummaryCSV, sweep.RunsCSV, sweep.SummaryMD, "plots/accuracy-crash-0.png", "plots/loss-crash-0.2.png"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	cells, _ := os.ReadDir(sweep.CellsDir(out))
	if len(cells) != 12 {
		t.Errorf("%d cached cells, want 12", len(cells))
	}

	// Again, with one cell deleted: one runs. With a third crash
	// probability: 6 more.
	if err := os.Remove(filepath.Join(sweep.CellsDir(out), cells[4].Name())); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI("sweep", file, "--out", out)
	if code != exitOK || !strings.Contains(stderr, "12 cells (11 cached, 1 run,") {
		t.Errorf("resume: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runCLI("sweep", file, "--out", out, "--set", "crash=0,0.2,0.1", "--quiet")
	if code != exitOK || stderr != "" {
		t.Errorf("--set: exit %d\n%s", code, stderr)
	}
	if cells, _ := os.ReadDir(sweep.CellsDir(out)); len(cells) != 18 {
		t.Errorf("%d cached cells after --set, want 18", len(cells))
	}
	code, stdout, _ = runCLI("sweep", file, "--out", out, "--only", "partition=iid", "--dry-run")
	if code != exitOK || !strings.Contains(stdout, "6 cells in 2 groups; 6 cached") {
		t.Errorf("--only: exit %d\n%s", code, stdout)
	}
}

func TestSweepRunsEachCellOnce(t *testing.T) {
	file := writeSweepFile(t, "scalar.toml", scalarSweep)
	o, code, stop := parseSweep([]string{file, "--out", t.TempDir(), "--quiet"}, &bytes.Buffer{})
	if stop {
		t.Fatalf("exit %d", code)
	}
	var calls atomic.Int64
	fake := func(_ context.Context, cfg simnet.Config, _ simnet.Observer) (*simnet.Report, error) {
		calls.Add(1)
		return fakeReport(cfg, 0.9), nil
	}
	var stdout, stderr bytes.Buffer
	if code := runSweep(context.Background(), "node sweep", o, fake, &stdout, &stderr); code != exitOK || calls.Load() != 12 {
		t.Fatalf("exit %d, %d runs\n%s", code, calls.Load(), stderr.String())
	}
	if code := runSweep(context.Background(), "node sweep", o, fake, &stdout, &stderr); code != exitOK || calls.Load() != 12 {
		t.Errorf("second sweep: exit %d, %d runs in all", code, calls.Load())
	}
	// Interrupted: exit 1, and what finished is kept.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.out = t.TempDir()
	stderr.Reset()
	if code := runSweep(ctx, "node sweep", o, fake, &stdout, &stderr); code != exitFailure || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("cancelled sweep: exit %d\n%s", code, stderr.String())
	}
}

func TestSweepBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		args       []string
		want       string
	}{
		{"a.toml", "seeds = [1,", nil, "malformed TOML"},
		{"a.json", `{"seeds": [1], "bogus": 2}`, nil, "invalid bogus: unknown key"},
		{"a.toml", "[base]\npeerz = 3", nil, "invalid base.peerz: unknown setting"},
		{"a.toml", `scenarios = ["nope"]`, nil, `invalid scenarios: unknown scenario "nope"`},
		{"a.toml", `aggregators = ["median"]`, nil, `invalid aggregators: scenario frl-mnist has no aggregator "median"`},
		{"a.toml", "fractions = [0.2]\nattacks = [\"nope\"]", nil, `invalid attacks: unknown attack "nope"`},
		{"a.toml", "fractions = [2]\nattacks = [\"reverse\"]", nil, "invalid fractions[1]: 2 is not a fraction in [0, 1]"},
		{"a.toml", "fractions = [0.2]", nil, "invalid base.attack: attackers 0.2 given without an attack"},
		{"a.toml", "seeds = [1]", []string{"--set", "bogus=1"}, `invalid --set: bogus: unknown setting "bogus"`},
		{"a.toml", "seeds = [1]", []string{"--set", "peers"}, "invalid --set"},
		{"a.toml", "seeds = [1]", []string{"--set", "peers=x"}, "invalid --set: peers: want an integer"},
		{"a.toml", "seeds = [1]", []string{"--only", "aggregator=median"}, "no cell to run"},
		{"a.toml", "seeds = [1]", []string{"--workers", "0"}, "invalid --workers"},
		{"a.toml", "seeds = [1]", []string{"--bogus"}, "bogus"},
		{"a.toml", "seeds = [1]", []string{"two"}, `unexpected argument "two"`},
	} {
		args := append([]string{"sweep", writeSweepFile(t, tc.name, tc.text), "--dry-run"}, tc.args...)
		code, stdout, stderr := runCLI(args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q %v: exit %d, stderr %q; want 2 and %q", tc.text, tc.args, code, stderr, tc.want)
		}
	}
	for _, args := range [][]string{{"sweep"}, {"sweep", filepath.Join(t.TempDir(), "none.toml")}} {
		if code, _, stderr := runCLI(args...); code != exitUsage || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI("sweep", "-h"); code != exitOK || !strings.Contains(stderr, "--dry-run") {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
}

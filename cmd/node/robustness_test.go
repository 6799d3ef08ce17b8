package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/sweeps"
)

func TestRobustnessFlags(t *testing.T) {
	o, code, stop := parseRobustness([]string{"--rounds", "3", "--seed", "4", "--aggregators", "vote-robust,median",
		"--attacks", "reverse,signflip", "--fractions", "0,0.2", "--out", "d", "--workers", "3"}, &bytes.Buffer{})
	if stop {
		t.Fatalf("exit %d", code)
	}
	if o.file != sweeps.Robustness || o.fromEmbd == nil || o.out != "d" || o.workers != 3 {
		t.Errorf("options %+v", o)
	}
	if want := []string{"rounds=3", "seed=4", "attackers=0,0.2"}; !slices.Equal(o.set, want) {
		t.Errorf("--set %v, want %v", o.set, want)
	}
	if want := []string{"aggregator=vote-robust,median", "attack=reverse,signflip"}; !slices.Equal(o.only, want) {
		t.Errorf("--only %v, want %v", o.only, want)
	}
	if o, _, _ := parseRobustness(nil, &bytes.Buffer{}); o.out != "out/robustness" || len(o.set)+len(o.only) != 0 {
		t.Errorf("defaults %+v", o)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rounds", "x"}, "invalid --rounds: rounds: want an integer"},
		{[]string{"--seed", "1", "--seeds", "1,2"}, "invalid --seed"},
		{[]string{"--aggregators", ""}, "invalid --aggregators: empty"},
		{[]string{"--bogus"}, "bogus"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		// What simnet rejects is reported before any run, naming the setting.
		{[]string{"--peers", "10", "--per-round", "11", "--dry-run"}, "invalid --set per_round: 11, must be in [1, peers=10]"},
		{[]string{"--fractions", "0,0.5", "--dry-run"}, "invalid --set attackers: 0.5, must be a fraction in [0, 0.5)"},
		{[]string{"--aggregators", "nope", "--dry-run"}, "no cell to run"},
		{[]string{"--workers", "0"}, "invalid --workers"},
	} {
		code, stdout, stderr := runCLI(append([]string{"robustness"}, tc.args...)...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// TestRobustnessTable runs `node robustness` on a fake runner: the rows,
// columns and cells of the table.
func TestRobustnessTable(t *testing.T) {
	o, _, stop := parseRobustness([]string{"--rounds", "3", "--seeds", "1,2", "--aggregators", "vote-robust,median",
		"--attacks", "reverse,signflip,labelflip", "--fractions", "0,0.2", "--out", t.TempDir(), "--quiet"}, &bytes.Buffer{})
	if stop {
		t.Fatal("parse failed")
	}
	var mu sync.Mutex
	var ran []string
	fake := func(_ context.Context, cfg simnet.Config, _ simnet.Observer) (*simnet.Report, error) {
		mu.Lock()
		ran = append(ran, fmt.Sprintf("%s/%s/%s/%d", cfg.Aggregator, cfg.Scenario, cfg.Attack, cfg.Seed))
		mu.Unlock()
		if cfg.Rounds != 3 || cfg.Peers != 1000 || cfg.PerRound != 25 || cfg.Partition != "dirichlet:1.0" {
			t.Errorf("run config %+v", cfg)
		}
		if cfg.Attack == "labelflip" && cfg.Aggregator == "median" && cfg.Seed == 2 {
			return nil, errors.New("boom")
		}
		return fakeReport(cfg, 0.5+cfg.Attackers+0.01*float64(cfg.Seed)), nil
	}
	var stdout, stderr bytes.Buffer
	code := runSweep(context.Background(), robustnessCmd.name, o, fake, &stdout, &stderr)
	if code != exitFailure {
		t.Errorf("exit %d with a failed cell, want 1", code)
	}
	// vote-robust: baseline, reverse, labelflip; median: baseline, signflip, labelflip; 2 seeds each.
	if len(ran) != 12 {
		t.Errorf("%d runs, want 12: %v", len(ran), ran)
	}
	for _, line := range []string{
		"| scenario | aggregator | no attack | reverse 20% | labelflip 20% | signflip 20% |",
		"| frl-mnist | vote-robust | 0.5150 ± 0.0635 | 0.7150 ± 0.0635 | 0.7150 ± 0.0635 | - |",
		"| fedavg-mnist | median | 0.5150 ± 0.0635 | - | 0.7100 | 0.7150 ± 0.0635 |",
	} {
		if !strings.Contains(stdout.String(), line) {
			t.Errorf("table lacks %q:\n%s", line, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "median labelflip 20% seed 2) failed: boom") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

func TestSimAttackFlags(t *testing.T) {
	var names []string // the attacks engineer adds to these
	for _, a := range simnet.Attacks() {
		names = append(names, a.Name)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--attack", "reverse"}, "invalid --attackers: attack \"reverse\" given without a fraction of attackers"},
		{[]string{"--attackers", "0.2"}, "invalid --attack: attackers 0.2 given without an attack (have: " + strings.Join(names, ", ") + ")"},
		{[]string{"--attackers", "0.2", "--attack", "nope"}, "invalid --attack: unknown attack \"nope\""},
		{[]string{"--attackers", "0.4", "--attack", "reverse"}, "invalid --attack: the task of scenario test-scalar supports no attacks"},
	} {
		code, _, stderr := runCLI(append([]string{"sim", "--quiet", "--scenario", fakeScenario}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	code, stdout, _ := runCLI("sim", "--list")
	if code != exitOK || !strings.Contains(stdout, "reverse") || !strings.Contains(stdout, "labelflip") {
		t.Errorf("sim --list does not list the attacks:\n%s", stdout)
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/simnet"
)

func TestRobustnessTable(t *testing.T) {
	o, err := parseRobustness([]string{"--rounds", "3", "--aggregators", "vote-robust,median", "--attacks", "reverse,signflip,labelflip", "--fractions", "0,0.2"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	fake := func(_ context.Context, cfg simnet.Config) (*simnet.Report, error) {
		ran = append(ran, cfg.Aggregator+"/"+cfg.Scenario+"/"+cfg.Attack)
		if cfg.Rounds != 3 || cfg.Peers != 1000 || cfg.PerRound != 25 || cfg.Seed != 1 || cfg.Partition != "dirichlet:1.0" {
			t.Errorf("run config %+v", cfg)
		}
		if cfg.Attack == "labelflip" && cfg.Aggregator == "median" {
			return nil, errors.New("boom")
		}
		return &simnet.Report{FinalAccuracy: 0.5 + cfg.Attackers}, nil
	}
	var progress bytes.Buffer
	cells := robustness(context.Background(), o, fake, &progress)
	want := []string{
		"vote-robust/frl-mnist/", "vote-robust/frl-mnist/reverse", "vote-robust/frl-mnist/labelflip",
		"median/fedavg-mnist/", "median/fedavg-mnist/signflip", "median/fedavg-mnist/labelflip",
	}
	if strings.Join(ran, " ") != strings.Join(want, " ") {
		t.Fatalf("runs %v, want %v", ran, want)
	}
	var out bytes.Buffer
	if err := writeRobustTable(&out, o, cells); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Final accuracy after 3 rounds: 1000 peers, 25 per round, partition dirichlet:1.0, seed 1.",
		"| aggregator | scenario | no attack | reverse 20% | signflip 20% | labelflip 20% |",
		"| vote-robust | frl-mnist | 0.5000 | 0.7000 | - | 0.7000 |",
		"| median | fedavg-mnist | 0.5000 | - | 0.7000 | error |",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("table lacks %q:\n%s", line, out.String())
		}
	}
	if !strings.Contains(progress.String(), "[6/6] median on fedavg-mnist, labelflip 20%: error: boom") {
		t.Errorf("progress:\n%s", progress.String())
	}
}

func TestRobustnessFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--aggregators", "vote,nope"}, "aggregators"},
		{[]string{"--attacks", "reverse,nope"}, "attacks"},
		{[]string{"--fractions", "0,0.5"}, "fractions"},
		{[]string{"--fractions", "x"}, "fractions"},
		{[]string{"--scenarios", "nope"}, "scenarios"},
		{[]string{"--aggregators", ","}, "aggregators"},
		{[]string{"--peers", "0"}, "peers"},
		{[]string{"--rounds", "-1"}, "rounds"},
		{[]string{"--seed", "0"}, "seed"},
	} {
		_, err := parseRobustness(tc.args, &bytes.Buffer{})
		var ue *usageError
		if !errors.As(err, &ue) || ue.flag != tc.flag {
			t.Errorf("%v: %v, want a usage error on --%s", tc.args, err, tc.flag)
		}
	}
	// Settings that simnet rejects are reported before any run.
	code, _, stderr := runCLI("robustness", "--peers", "10", "--per-round", "11")
	if code != exitUsage || !strings.Contains(stderr, "invalid --per-round") {
		t.Errorf("--per-round 11 of 10 peers: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI("robustness", "--bogus")
	if code != exitUsage || !strings.Contains(stderr, "bogus") {
		t.Errorf("--bogus: exit %d, stderr %q", code, stderr)
	}
}

func TestSimAttackFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--attack", "reverse"}, "invalid --attackers: attack \"reverse\" given without a fraction of attackers"},
		{[]string{"--attackers", "0.2"}, "invalid --attack: attackers 0.2 given without an attack (have: reverse, random, signflip, noise, labelflip)"},
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

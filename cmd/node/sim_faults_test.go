package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
)

// TestSimFaultFlagsBadInput: a bad fault or training setting exits 2 with a
// message that names the flag.
func TestSimFaultFlagsBadInput(t *testing.T) {
	sched := filepath.Join(t.TempDir(), "schedule.txt")
	if err := os.WriteFile(sched, []byte("# rounds who\n2-3 peer-0001 peer-0009\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"sim", "--quiet", "--scenario", fakeScenario} // 6 peers, 4 rounds
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stragglers", "weibull:2"}, `invalid --stragglers: unknown straggler model "weibull:2"`},
		{[]string{"--stragglers", "slow:0.1"}, "invalid --stragglers:"},
		{[]string{"--churn", "1.5"}, "invalid --churn: 1.5, must be a probability in [0, 1]"},
		{[]string{"--churn", "-0.5"}, "invalid --churn:"},
		{[]string{"--crash-aggregator", "1.01"}, "invalid --crash-aggregator: 1.01, must be a probability in [0, 1]"},
		{[]string{"--crash", "1"}, "invalid --crash:"},
		{[]string{"--crash-aggregator-at", "2,9"}, "invalid --crash-aggregator-at: round 9 does not exist: the run has rounds 1..4"},
		{[]string{"--crash-aggregator-at", "0"}, "invalid --crash-aggregator-at:"},
		{[]string{"--partition-net", "3-7:0.5"}, "invalid --partition-net: window \"3-7:0.5\": round 7 does not exist: the run has 4 rounds"},
		{[]string{"--partition-net", "2:peer-0006"}, "invalid --partition-net: window \"2:peer-0006\": peer peer-0006 does not exist: the run has 6 peers"},
		{[]string{"--partition-net", "2:1.5"}, "invalid --partition-net: window \"2:1.5\": fraction 1.5 is outside [0, 1]"},
		{[]string{"--partition-net", "@" + sched}, "invalid --partition-net: window \"2-3:peer-0001,peer-0009\": peer peer-0009 does not exist"},
		{[]string{"--partition-net", "@" + sched + ".missing"}, "invalid value \"@" + sched + ".missing\" for flag -partition-net"},
		{[]string{"--aggregator-down", "0s"}, "invalid --aggregator-down: 0s would mean the scenario's default (5s)"},
		{[]string{"--aggregator-down", "-1s"}, "invalid --aggregator-down:"},
		{[]string{"--lr", "0.1"}, "invalid --lr: scenario test-scalar has no local-training settings"},
		{[]string{"--net", "dialup"}, "invalid --net: unknown network profile \"dialup\""},
	} {
		code, stdout, stderr := runCLI(append(slices.Clone(base), tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("node sim %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and stderr containing %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	// The MNIST scenarios check their training settings before loading anything.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--lr", "-0.1"}, "invalid --lr:"},
		{[]string{"--lr", "0"}, "invalid --lr: 0 would mean the scenario's default (0.4)"},
		{[]string{"--momentum", "1"}, "invalid --momentum:"},
		{[]string{"--lr-schedule", "step"}, "invalid --lr-schedule:"},
		{[]string{"--lr-decay", "2"}, "invalid --lr-decay:"},
	} {
		code, _, stderr := runCLI(append([]string{"sim", "--quiet", "--scenario", "frl-mnist"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("node sim --scenario frl-mnist %q: exit %d, stderr:\n%s\nwant exit 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestParseSimFaultFlags(t *testing.T) {
	sched := filepath.Join(t.TempDir(), "schedule.txt")
	if err := os.WriteFile(sched, []byte("2-3 0.4\n4 peer-0001 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseSim([]string{
		"--partition-net", "@" + sched, "--stragglers", "slow:0.1x5", "--churn", "0.05",
		"--crash-aggregator", "0.1", "--crash-aggregator-at", "3,7", "--aggregator-down", "2.5s",
		"--lr", "0.2", "--momentum", "0.5", "--weight-decay", "0.001", "--epochs", "3", "--batch", "16",
		"--lr-schedule", "constant", "--lr-decay", "0.99",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := simnet.Config{
		PartitionNet: "2-3:0.4;4:peer-0001,2", Stragglers: "slow:0.1x5", Churn: 0.05,
		CrashAggregator: 0.1, CrashAggregatorAt: "3,7", AggregatorDownMs: 2500,
		LR: 0.2, Momentum: 0.5, WeightDecay: 0.001, Epochs: 3, Batch: 16, LRSchedule: "constant", LRDecay: 0.99,
	}
	if o.cfg != want {
		t.Errorf("cfg = %+v\nwant  %+v", o.cfg, want)
	}
}

func TestSimListFaults(t *testing.T) {
	code, stdout, _ := runCLI("sim", "--list")
	if code != exitOK || !strings.Contains(stdout, "Faults (seeded, replayable):") {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	for _, f := range simnet.Faults() {
		if !strings.Contains(stdout, "  "+f.Name+" ") {
			t.Errorf("--list lacks the fault %s:\n%s", f.Name, stdout)
		}
		if f.Name != "net" {
			if _, ok := simCmdFlag(f.Name); !ok {
				t.Errorf("the fault %s has no flag", f.Name)
			}
		}
	}
	code, stdout, _ = runCLI("sim", "--list", "--json")
	var l listing
	if err := json.Unmarshal([]byte(stdout), &l); code != exitOK || err != nil || len(l.Faults) != len(simnet.Faults()) {
		t.Fatalf("--list --json: exit %d, %v, faults %+v", code, err, l.Faults)
	}
}

// simCmdFlag reports whether `node sim` has a flag called name.
func simCmdFlag(name string) (string, bool) {
	for _, f := range flagForField {
		if f == name {
			return f, true
		}
	}
	return "", false
}

// TestSimFaultsReplay: the same seed, flags and fault schedule give the same
// report.json (wall-clock fields aside) with a partition, stragglers, a lossy
// network, trainer crashes and an aggregator crash all on.
func TestSimFaultsReplay(t *testing.T) {
	args := []string{"sim", "--quiet", "--json", "--scenario", fakeScenario, "--peers", "12", "--per-round", "5",
		"--rounds", "6", "--seed", "3", "--quorum", "0.8", "--round-timeout", "3s",
		"--net", "lossy", "--crash", "0.05", "--partition-net", "2-3:0.25;5:peer-0001,peer-0004",
		"--stragglers", "lognormal:0.5", "--churn", "0.05", "--crash-aggregator", "0.2", "--crash-aggregator-at", "4",
		"--aggregator-down", "2s"}
	var reports [2]string
	for i := range reports {
		code, stdout, stderr := runCLI(args...)
		if code != exitOK {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		reports[i] = withoutWallClock(t, stdout)
	}
	if reports[0] != reports[1] {
		t.Fatalf("same flags, different report.json:\n%s\n%s", reports[0], reports[1])
	}
	var rep simnet.Report
	if err := json.Unmarshal([]byte(reports[0]), &rep); err != nil {
		t.Fatal(err)
	}
	cfg, err := report.ConfigAs[simnet.Config](&rep)
	if err != nil || cfg.PartitionNet != "2-3:0.25;5:peer-0001,peer-0004" || cfg.AggregatorDownMs != 2000 {
		t.Errorf("config %+v, %v", cfg, err)
	}
	faults := map[string]bool{}
	for _, r := range rep.Rounds {
		for _, f := range r.Faults {
			faults[f] = true
		}
	}
	if !faults["partition"] || !faults["aggregator-crash"] || !slices.Contains(rep.Rounds[3].Faults, "aggregator-crash") {
		t.Errorf("faults %v; rounds %+v", faults, rep.Rounds)
	}
}

// withoutWallClock zeroes the wall-clock fields of a report.json.
func withoutWallClock(t *testing.T, js string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatalf("%v:\n%s", err, js)
	}
	m["wall_seconds"] = 0
	for _, r := range m["rounds"].([]any) {
		r.(map[string]any)["wall_ms"] = 0
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

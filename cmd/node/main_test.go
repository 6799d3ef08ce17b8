package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/task"
)

// The fake scenario: the model is one float64 (8 bytes) that every client
// moves halfway to 1, and the aggregator averages. Accuracy is the value, so
// after r rounds it is 1 - 2^-r, and a run takes microseconds.
const fakeScenario = "test-scalar"

var fakeDefaults = simnet.Config{
	Scenario: fakeScenario, Peers: 6, PerRound: 3, Rounds: 4, Seed: 1,
	Partition: "iid", Aggregator: "average", Net: "ideal", Quorum: 1, RoundTimeoutMs: 10_000,
}

func init() {
	simnet.RegisterScenario(simnet.Scenario{
		Name:        fakeScenario,
		Description: "a one-number model that converges to 1 (tests only)",
		Defaults:    fakeDefaults,
		Aggregators: []string{"average"},
		Build: func(cfg simnet.Config) (task.Task, error) {
			return scalarTask{clients: cfg.Peers}, nil
		},
	})
}

// trainHook, when set, is called at the start of every Train.
var (
	trainHookMu sync.Mutex
	trainHook   func(task.Job)
)

func setTrainHook(t *testing.T, f func(task.Job)) {
	trainHookMu.Lock()
	trainHook = f
	trainHookMu.Unlock()
	t.Cleanup(func() {
		trainHookMu.Lock()
		trainHook = nil
		trainHookMu.Unlock()
	})
}

func encodeScalar(v float64) []byte {
	return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
}

func decodeScalar(b []byte) (float64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("scalar: %d bytes, want 8", len(b))
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(b))
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, errors.New("scalar: not finite")
	}
	return v, nil
}

type scalarTask struct{ clients int }

func (s scalarTask) Info() task.Info {
	return task.Info{Name: fakeScenario, Model: "scalar", Params: 1, DefaultAggregator: "average", Aggregators: []string{"average"}}
}
func (s scalarTask) NumClients() int               { return s.clients }
func (s scalarTask) ClientSamples(int) int         { return 10 }
func (s scalarTask) InitialModel() ([]byte, error) { return encodeScalar(0), nil }
func (s scalarTask) Evaluate(m []byte) (task.Eval, error) {
	v, err := decodeScalar(m)
	return task.Eval{Accuracy: v, Loss: 1 - v, Samples: 100}, err
}

func (s scalarTask) NewAggregator(name string) (aggregate.Aggregator, error) {
	if name != "" && name != "average" {
		return nil, fmt.Errorf("unknown aggregator %q", name)
	}
	return &averager{}, nil
}

func (s scalarTask) Train(job task.Job) ([]byte, error) {
	trainHookMu.Lock()
	hook := trainHook
	trainHookMu.Unlock()
	if hook != nil {
		hook(job)
	}
	v, err := decodeScalar(job.Model)
	if err != nil {
		return nil, err
	}
	return encodeScalar(v + (1-v)/2), nil
}

type averager struct {
	sum float64
	n   int
}

func (a *averager) Name() string { return "average" }
func (a *averager) Begin(uint64, []byte) error {
	*a = averager{}
	return nil
}
func (a *averager) Add(u aggregate.Update) error {
	v, err := decodeScalar(u.Payload)
	if err != nil {
		return err
	}
	a.sum += v
	a.n++
	return nil
}
func (a *averager) Len() int { return a.n }
func (a *averager) Finalize() ([]byte, error) {
	if a.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	return encodeScalar(a.sum / float64(a.n)), nil
}

// runCLI runs the command line and returns its exit code, stdout and stderr.
func runCLI(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"--peers"}} {
		code, stdout, stderr := runCLI(args...)
		if code != exitUsage || stdout != "" {
			t.Errorf("node %q: exit %d, stdout %q; want exit 2 and no stdout", args, code, stdout)
		}
		for _, c := range commands {
			if !strings.Contains(stderr, c.name) {
				t.Errorf("node %q: usage does not list %q:\n%s", args, c.name, stderr)
			}
		}
		if len(args) > 0 && !strings.Contains(stderr, fmt.Sprintf("unknown command %q", args[0])) {
			t.Errorf("node %q: stderr does not name the command:\n%s", args, stderr)
		}
	}
	if code, stdout, _ := runCLI("help"); code != exitOK || !strings.Contains(stdout, "sim") {
		t.Errorf("node help: exit %d, stdout %q", code, stdout)
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI("version")
	if code != exitOK || !strings.Contains(stdout, "go1.") || stderr != "" {
		t.Errorf("node version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, _ := runCLI("version", "extra"); code != exitUsage {
		t.Errorf("node version extra: exit %d, want 2", code)
	}
}

// TestSimBadFlags covers what the CLI rejects before anything runs, and what
// simnet rejects as a *simnet.ConfigError: each exits 2 naming the flag.
func TestSimBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--peers", "abc"}, `invalid value "abc" for flag -peers`},
		{[]string{"--rounds", "1.5"}, "-rounds"},
		{[]string{"--seed", "-1"}, "-seed"},
		{[]string{"--attackers", "lots"}, "-attackers"},
		{[]string{"--json=maybe"}, "-json"},
		{[]string{"--round-timeout", "30"}, `invalid value "30" for flag -round-timeout: missing unit`},
		{[]string{"--round-timeout", "1500us"}, "-round-timeout: must be a whole number of milliseconds"},
		{[]string{"--scenario", fakeScenario, "--rounds", "2", "extra"}, `unexpected argument "extra"`},
		{[]string{"--scenario", fakeScenario, "--peers", "0"}, "invalid --peers: 0 would mean the scenario's default (6)"},
		{[]string{"--scenario", fakeScenario, "--round-timeout", "0s"}, "invalid --round-timeout: 0s would mean the scenario's default (10s)"},
		{[]string{"--scenario", fakeScenario, "--partition", ""}, `invalid --partition: "" would mean the scenario's default ("iid")`},
		// From simnet.Run, as a *simnet.ConfigError.
		{[]string{"--scenario", fakeScenario, "--per-round", "-1"}, "node sim: invalid --per-round:"},
		{[]string{"--scenario", fakeScenario, "--per-round", "7"}, "node sim: invalid --per-round:"},
		{[]string{"--scenario", "no-such-scenario"}, "node sim: invalid --scenario:"},
		{[]string{"--scenario", fakeScenario, "--round-timeout", "-1s"}, "node sim: invalid --round-timeout:"},
		{[]string{"--scenario", fakeScenario, "--partition", "bogus"}, "node sim: invalid --partition:"},
		{[]string{"--scenario", fakeScenario, "--net", "mars"}, "node sim: invalid --net:"},
	} {
		code, stdout, stderr := runCLI(append([]string{"sim", "--quiet"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("node sim %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and stderr containing %q",
				tc.args, code, stdout, stderr, tc.want)
		}
	}
}

func TestSimGivenZeroMatchingDefaultIsAccepted(t *testing.T) {
	// The fake scenario has no attackers by default, so --attackers 0 is no ambiguity.
	code, _, stderr := runCLI("sim", "--quiet", "--scenario", fakeScenario, "--rounds", "1", "--attackers", "0", "--crash", "0")
	if code != exitOK {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestSimHelp(t *testing.T) {
	code, stdout, stderr := runCLI("sim", "-h")
	if code != exitOK || stdout != "" || !strings.Contains(stderr, "-round-timeout") {
		t.Errorf("node sim -h: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

func TestFlagForFieldCoversConfig(t *testing.T) {
	typ := reflect.TypeFor[simnet.Config]()
	for i := range typ.NumField() {
		name := strings.Split(typ.Field(i).Tag.Get("json"), ",")[0]
		if _, ok := flagForField[name]; !ok && !reportOnlyFields[name] {
			t.Errorf("simnet.Config field %q has no flag in flagForField", name)
		}
	}
	for field, want := range map[string]string{
		"per_round": "--per-round", "round_timeout_ms": "--round-timeout", "data_dir": "--data",
		"peers": "--peers", "something_else": "something_else",
	} {
		if got := flagName(field); got != want {
			t.Errorf("flagName(%q) = %q, want %q", field, got, want)
		}
	}
}

func TestParseSim(t *testing.T) {
	o, err := parseSim(nil, &bytes.Buffer{})
	if err != nil || o.cfg != (simnet.Config{}) || len(o.given) != 0 {
		t.Errorf("no flags: cfg %+v, given %v, err %v; want all zero", o.cfg, o.given, err)
	}
	o, err = parseSim([]string{
		"--scenario", fakeScenario, "--peers", "5", "--per-round=2", "--rounds", "9", "--seed", "42",
		"--partition", "dirichlet:0.3", "--aggregator", "average", "--attackers", "0.25", "--attack", "reverse",
		"--net", "wan", "--crash", "0.1", "--quorum", "0.8", "--round-timeout", "1.5s", "--data", "/d",
		"--workers", "3", "--out", "o", "--json", "--quiet",
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := simnet.Config{
		Scenario: fakeScenario, Peers: 5, PerRound: 2, Rounds: 9, Seed: 42, Partition: "dirichlet:0.3",
		Aggregator: "average", Attackers: 0.25, Attack: "reverse", Net: "wan", Crash: 0.1, Quorum: 0.8,
		RoundTimeoutMs: 1500, DataDir: "/d", Workers: 3,
	}
	if o.cfg != want {
		t.Errorf("cfg = %+v\nwant  %+v", o.cfg, want)
	}
	if o.out != "o" || !o.json || !o.quiet || o.list || len(o.given) != 18 {
		t.Errorf("options %+v", o)
	}
}

func TestSimJSONAndOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	code, stdout, stderr := runCLI("sim", "--scenario", fakeScenario, "--rounds", "3", "--json", "--quiet", "--out", dir)
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var rep simnet.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	cfg, err := report.ConfigAs[simnet.Config](&rep)
	if err != nil {
		t.Fatalf("config of the JSON report: %v", err)
	}
	if rep.Scenario != fakeScenario || len(rep.Rounds) != 3 || cfg.Rounds != 3 || cfg.Peers != 6 {
		t.Errorf("report: scenario %q, %d rounds, config %+v", rep.Scenario, len(rep.Rounds), cfg)
	}
	if math.Abs(rep.FinalAccuracy-0.875) > 1e-12 {
		t.Errorf("final accuracy %v, want 0.875", rep.FinalAccuracy)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, report.JSONFile))
	if err != nil || string(onDisk) != stdout {
		t.Errorf("report.json differs from stdout (err %v)", err)
	}
	for _, f := range []string{report.CSVFile, report.PNGFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestSimTableAndProgress(t *testing.T) {
	code, stdout, stderr := runCLI("sim", "--scenario", fakeScenario, "--rounds", "3")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{fakeScenario, "average", "final accuracy  0.8750", "accepted/selected", "3/3"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	// stderr is not a terminal here: one plain line per round.
	for i := 1; i <= 3; i++ {
		if !strings.Contains(stderr, fmt.Sprintf("round %d/3 acc ", i)) {
			t.Errorf("progress lacks round %d:\n%s", i, stderr)
		}
	}
	if strings.Contains(stderr, "\r") {
		t.Errorf("progress redraws lines on a non-terminal:\n%q", stderr)
	}
}

func TestSimSameSeedSameModel(t *testing.T) {
	hash := func() string {
		code, stdout, stderr := runCLI("sim", "--scenario", fakeScenario, "--seed", "5", "--json", "--quiet")
		if code != exitOK {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		var rep simnet.Report
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		return rep.Model.Hash
	}
	if a, b := hash(), hash(); a == "" || a != b {
		t.Errorf("model hashes %q and %q, want equal and non-empty", a, b)
	}
}

func TestSimInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	setTrainHook(t, func(j task.Job) {
		if j.Round == 3 {
			cancel() // as Ctrl-C would
		}
	})
	var stdout, stderr bytes.Buffer
	code := runSim(ctx, []string{"--scenario", fakeScenario, "--rounds", "50", "--quiet", "--workers", "1"}, &stdout, &stderr)
	var n int
	if _, err := fmt.Sscanf(stderr.String(), "node sim: interrupted after %d of 50 rounds", &n); code != exitFailure || err != nil {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	if n >= 50 {
		t.Errorf("interrupted after %d rounds", n)
	}
	// The rounds completed before the interruption are reported. (Which they
	// are depends on how far simnet got: round 1, accuracy 0.5, normally.)
	if out := stdout.String(); n > 0 && (!strings.Contains(out, "final accuracy") || !strings.Contains(out, "0.5000")) {
		t.Errorf("stdout does not report the %d completed rounds:\n%s", n, out)
	}
	t.Logf("interrupted after %d rounds", n)
}

func TestPartialReport(t *testing.T) {
	rounds := []simnet.RoundReport{
		{Round: 1, Accuracy: 0.5, BytesUp: 10, BytesDown: 20, ModelHash: "aa"},
		{Round: 2, Accuracy: 0.7, BytesUp: 10, BytesDown: 20, ModelHash: "bb"},
		{Round: 3, Accuracy: 0.6, BytesUp: 10, BytesDown: 20, ModelHash: "cc"},
	}
	rep := partialReport(simnet.Config{Seed: 3}, rounds, 1500*time.Millisecond)
	if rep.Scenario != simnet.DefaultScenario || rep.Seed != 3 || rep.FinalAccuracy != 0.6 || rep.BestAccuracy != 0.7 ||
		rep.BytesUpTotal != 30 || rep.BytesDownTotal != 60 || rep.Model.Hash != "cc" || rep.WallSeconds != 1.5 {
		t.Errorf("partialReport = %+v", rep)
	}
}

func TestSimList(t *testing.T) {
	code, stdout, stderr := runCLI("sim", "--list")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"Scenarios (--scenario):", fakeScenario, "average (default)", "Attacks (--attack):", "Network profiles (--net):"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--list lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCLI("sim", "--list", "--json")
	var l listing
	if err := json.Unmarshal([]byte(stdout), &l); code != exitOK || err != nil {
		t.Fatalf("--list --json: exit %d, %v\n%s", code, err, stdout)
	}
	found := false
	for _, s := range l.Scenarios {
		found = found || (s.Name == fakeScenario && s.DefaultAggregator == "average")
	}
	if !found {
		t.Errorf("--list --json lacks %s: %+v", fakeScenario, l.Scenarios)
	}
	// Every registered scenario is listed, rank-vote fine-tuning included
	// (a simulator-only scenario: genesis does not offer it).
	names := map[string]string{}
	for _, s := range l.Scenarios {
		names[s.Name] = s.DefaultAggregator
	}
	for _, s := range simnet.Scenarios() {
		if _, ok := names[s.Name]; !ok {
			t.Errorf("--list --json lacks %s", s.Name)
		}
	}
	if names["frl-lora-mnist"] != "vote-clamp" {
		t.Errorf("--list --json: frl-lora-mnist default aggregator %q, want vote-clamp", names["frl-lora-mnist"])
	}
}

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	p := &progress{w: &buf, tty: true, now: func() time.Time { return clock }, start: clock}
	for i := 1; i <= 3; i++ {
		clock = clock.Add(2 * time.Second)
		p.round(simnet.RoundReport{Round: uint64(i), Accuracy: 0.9123, Loss: 0.314, Accepted: 9, Selected: 10}, 12)
	}
	p.finish()
	got := buf.String()
	last := got[strings.LastIndex(got, "\r")+1:]
	want := "round 3/12 [######..................] acc 0.9123 loss 0.314 2.00 s/round ETA 18s\x1b[K\n"
	if last != want {
		t.Errorf("last redraw\n%q\nwant\n%q", last, want)
	}
	if strings.Count(got, "\n") != 1 {
		t.Errorf("want one newline, at the end: %q", got)
	}
}

func TestProgressQuiet(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true)
	p.round(simnet.RoundReport{Round: 1}, 3)
	p.finish()
	if buf.Len() != 0 {
		t.Errorf("quiet progress wrote %q", buf.String())
	}
}

func TestFmtETA(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 22 * time.Second: "22s", 185 * time.Second: "3m05s", 3720 * time.Second: "1h02m",
	} {
		if got := fmtETA(d); got != want {
			t.Errorf("fmtETA(%v) = %q, want %q", d, got, want)
		}
	}
}

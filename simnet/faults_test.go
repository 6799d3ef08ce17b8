package simnet

import (
	"bytes"
	"context"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/task"
)

func TestParsePartitionNet(t *testing.T) {
	good := []struct {
		spec string
		want []partitionWindow
	}{
		{"", nil},
		{"10-20:0.3", []partitionWindow{{from: 10, to: 20, frac: 0.3}}},
		{"4:30%", []partitionWindow{{from: 4, to: 4, frac: 0.3}}},
		{"2-3:peer-0001,7, 3 ; 5:0.5", []partitionWindow{{from: 2, to: 3, peers: []int{1, 3, 7}}, {from: 5, to: 5, frac: 0.5}}},
	}
	for _, tc := range good {
		got, err := parsePartitionNet(tc.spec, 20, 30)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	bad := []struct{ spec, want string }{
		{"10-20", "want ROUNDS:WHO"},
		{"0:0.3", "round 0 does not exist"},
		{"25-31:0.3", "round 31 does not exist: the run has 30 rounds"},
		{"7-5:0.3", "ends before it starts"},
		{"x:0.3", "want a round"},
		{"3:1.5", "outside [0, 1]"},
		{"3:0.2,4", "a fraction (0.2) and more"},
		{"3:4,0.2", "a fraction among peers"},
		{"3:peer-0020", "peer peer-0020 does not exist: the run has 20 peers"},
		{"3:20", "peer 20 does not exist"},
		{"3:peer-7", "want a peer ID"},
		{"3:", "no peers and no fraction"},
		{";", "names no window"},
	}
	for _, tc := range bad {
		if _, err := parsePartitionNet(tc.spec, 20, 30); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one containing %q", tc.spec, err, tc.want)
		}
	}
}

func TestLoadPartitionSchedule(t *testing.T) {
	file := "# rounds  who\n\n10-20  0.3\n25 peer-0001 peer-0002 7\n  30-31:3,4\n"
	got, err := LoadPartitionSchedule(strings.NewReader(file))
	if want := "10-20:0.3;25:peer-0001,peer-0002,7;30-31:3,4"; err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	if _, err := parsePartitionNet(got, 10, 31); err != nil {
		t.Fatalf("the loaded schedule does not parse: %v", err)
	}
	for _, bad := range []string{"", "# only a comment\n", "10-20\n"} {
		if _, err := LoadPartitionSchedule(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestStragglers(t *testing.T) {
	for _, bad := range []string{"weibull:1", "lognormal", "lognormal:-1", "slow:0.1", "slow:2x5", "slow:0.1x0.5", "none:1"} {
		if _, err := parseStragglers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	st, err := parseStragglers("slow:0.1x5")
	if err != nil {
		t.Fatal(err)
	}
	slow := 0
	for c := range 10_000 {
		switch f := st.speed(7, c); f {
		case 5:
			slow++
		case 1:
		default:
			t.Fatalf("client %d: factor %v", c, f)
		}
	}
	if slow < 900 || slow > 1100 {
		t.Errorf("slow:0.1x5: %d of 10000 peers slow, want about 1000", slow)
	}
	ln, _ := parseStragglers("lognormal:0.5")
	var logs []float64
	for c := range 10_000 {
		logs = append(logs, math.Log(ln.speed(7, c)))
	}
	mean, sd := meanSD(logs)
	if math.Abs(mean) > 0.02 || math.Abs(sd-0.5) > 0.02 {
		t.Errorf("lognormal:0.5: log factor mean %.3f sd %.3f, want 0 and 0.5", mean, sd)
	}
	if none, _ := parseStragglers(""); none.speed(7, 3) != 1 {
		t.Error("no stragglers, but a peer is slowed")
	}
}

func meanSD(x []float64) (float64, float64) {
	var s, ss float64
	for _, v := range x {
		s += v
	}
	m := s / float64(len(x))
	for _, v := range x {
		ss += (v - m) * (v - m)
	}
	return m, math.Sqrt(ss / float64(len(x)))
}

func TestValidateFaults(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"churn", func(c *Config) { c.Churn = 1.5 }},
		{"churn", func(c *Config) { c.Churn = -0.1 }},
		{"crash_aggregator", func(c *Config) { c.CrashAggregator = 2 }},
		{"crash_aggregator", func(c *Config) { c.CrashAggregator = nan() }},
		{"crash_aggregator_at", func(c *Config) { c.CrashAggregatorAt = "0" }},
		{"crash_aggregator_at", func(c *Config) { c.CrashAggregatorAt = "2,5" }}, // 4 rounds
		{"crash_aggregator_at", func(c *Config) { c.CrashAggregatorAt = "two" }},
		{"aggregator_down_ms", func(c *Config) { c.AggregatorDownMs = -1 }},
		{"partition_net", func(c *Config) { c.PartitionNet = "3-9:0.2" }},
		{"partition_net", func(c *Config) { c.PartitionNet = "1:peer-0099" }},
		{"stragglers", func(c *Config) { c.Stragglers = "pareto:1" }},
		{"lr", func(c *Config) { c.LR = -1 }},
		{"momentum", func(c *Config) { c.Momentum = 1 }},
		{"lr_schedule", func(c *Config) { c.LRSchedule = "step" }},
		{"lr_decay", func(c *Config) { c.LRDecay = 1.5 }},
	} {
		c := testConfig()
		tc.edit(&c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: Validate() = %v", tc.field, err)
		}
	}
}

// faultyConfig has every fault on: a partition, stragglers, a lossy
// network, trainer crashes and an aggregator crash.
func faultyConfig() Config {
	cfg := testConfig()
	cfg.Rounds, cfg.Quorum, cfg.RoundTimeoutMs = 8, 0.8, 2_000
	cfg.Net, cfg.Crash = "lossy", 0.05
	cfg.PartitionNet = "2-3:0.3;6:peer-0001,peer-0004"
	cfg.Stragglers = "lognormal:1"
	cfg.Churn = 0.05
	cfg.CrashAggregator, cfg.CrashAggregatorAt = 0.2, "4"
	return cfg
}

// TestFaultsReplay: with every fault on, the same seed gives the same
// report.json (wall-clock fields aside) whatever the number of workers, and
// the faults show in it.
func TestFaultsReplay(t *testing.T) {
	cfg := faultyConfig()
	a := run(t, cfg, &fakeTask{clients: cfg.Peers, modelSize: 50_000}, simOptions{})
	cfg.Workers = 1
	b := run(t, cfg, &fakeTask{clients: cfg.Peers, modelSize: 50_000}, simOptions{})
	b.Config = a.Config
	ja, jb := reportJSON(t, a), reportJSON(t, b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("same seed and faults, different report.json:\n%s\n%s", ja, jb)
	}
	seen := map[string]bool{}
	for _, r := range a.Rounds {
		for _, f := range r.Faults {
			seen[f] = true
		}
	}
	for _, f := range []string{"partition", "aggregator-crash"} {
		if !seen[f] {
			t.Errorf("no round reports the fault %q: %s", f, ja)
		}
	}
	if !slices.Contains(a.Rounds[3].Faults, "aggregator-crash") {
		t.Errorf("round 4 (--crash-aggregator-at 4): faults %v", a.Rounds[3].Faults)
	}
	other := faultyConfig()
	other.Seed = 2
	if c := run(t, other, &fakeTask{clients: other.Peers, modelSize: 50_000}, simOptions{}); c.Model.Hash == a.Model.Hash {
		t.Error("another seed, the same model")
	}
}

// reportJSON is r's report.json without its wall-clock fields.
func reportJSON(t *testing.T, r *Report) []byte {
	t.Helper()
	c := withoutWallTimes(r)
	var buf bytes.Buffer
	if err := report.WriteJSON(&buf, &c); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAggregatorCrashLosesNoUpdate: crashing the aggregator mid-round loses
// no accepted update: with every selected peer's update awaited, each round
// takes the same updates and gives the same model as without the crash.
func TestAggregatorCrashLosesNoUpdate(t *testing.T) {
	for _, net := range []string{"ideal", "wan"} {
		t.Run(net, func(t *testing.T) {
			cfg := testConfig()
			cfg.Net, cfg.Rounds, cfg.RoundTimeoutMs = net, 5, 60_000
			clean := run(t, cfg, nil, simOptions{})
			crashed := cfg
			crashed.CrashAggregatorAt, crashed.CrashAggregator = "1,3", 0.3
			rep := run(t, crashed, nil, simOptions{})
			if rep.Model.Hash != clean.Model.Hash {
				t.Fatalf("the crashes changed the model: %s, without them %s", rep.Model.Hash, clean.Model.Hash)
			}
			crashes := 0
			for i, r := range rep.Rounds {
				if r.ModelHash != clean.Rounds[i].ModelHash || r.Accepted != r.Selected || r.Rejected != 0 {
					t.Errorf("round %d: %+v, without crashes %+v", r.Round, r, clean.Rounds[i])
				}
				if slices.Contains(r.Faults, "aggregator-crash") {
					crashes++
					// Down 5 s (the default), then the round resumes.
					if r.SimMs < DefaultAggregatorDownMs {
						t.Errorf("round %d with a crash took %.1f ms", r.Round, r.SimMs)
					}
				}
			}
			if crashes < 2 || !slices.Contains(rep.Rounds[0].Faults, "aggregator-crash") || !slices.Contains(rep.Rounds[2].Faults, "aggregator-crash") {
				t.Fatalf("%d rounds with an aggregator crash, want rounds 1 and 3 at least: %+v", crashes, rep.Rounds)
			}
		})
	}
}

// TestAggregatorCrashEveryRound: crashing in every round, a run with a
// quorum below every peer still finishes, and each crash is reported.
func TestAggregatorCrashEveryRound(t *testing.T) {
	cfg := testConfig()
	cfg.CrashAggregator, cfg.Quorum, cfg.AggregatorDownMs = 1, 0.6, 300
	rep := run(t, cfg, nil, simOptions{})
	for _, r := range rep.Rounds {
		if !slices.Contains(r.Faults, "aggregator-crash") || r.Accepted < 3 {
			t.Errorf("round %+v", r)
		}
	}
}

func TestPartitionSchedule(t *testing.T) {
	cfg := testConfig()
	cfg.Rounds, cfg.PerRound, cfg.RoundTimeoutMs = 6, 20, 5_000
	cfg.PartitionNet = "2-3:peer-0001,peer-0002,5;5:0.5"
	rep := run(t, cfg, nil, simOptions{})
	for _, r := range rep.Rounds {
		cutOff := map[uint64]int{2: 3, 3: 3, 5: 10}[r.Round]
		hit := slices.Contains(r.Faults, "partition")
		if r.Accepted != 20-cutOff || hit != (cutOff > 0) {
			t.Errorf("round %d: %d accepted, faults %v; want %d accepted", r.Round, r.Accepted, r.Faults, 20-cutOff)
		}
		if cutOff > 0 && r.SimMs < 4_999 {
			t.Errorf("round %d under a partition took %.1f ms, want the deadline", r.Round, r.SimMs)
		}
	}
}

func TestStragglersMissDeadlines(t *testing.T) {
	cfg := testConfig()
	cfg.Rounds, cfg.RoundTimeoutMs = 6, 50 // nominal training: 3-3.6 ms
	nominal := run(t, cfg, nil, simOptions{})
	cfg.Stragglers = "slow:0.3x100"
	rep := run(t, cfg, nil, simOptions{})
	short := 0
	for i, r := range rep.Rounds {
		if nominal.Rounds[i].Accepted != r.Selected {
			t.Fatalf("round %d without stragglers: %+v", r.Round, nominal.Rounds[i])
		}
		if r.Accepted < r.Selected {
			short++
			if !slices.Contains(r.Faults, "straggler") {
				t.Errorf("round %d missed %d updates, faults %v", r.Round, r.Selected-r.Accepted, r.Faults)
			}
		}
	}
	if short == 0 {
		t.Fatal("30% of peers 100 times slower, and no round missed an update")
	}
}

func TestChurn(t *testing.T) {
	cfg := testConfig()
	cfg.Rounds, cfg.RoundTimeoutMs, cfg.Churn = 10, 1_000, 0.3
	rep := run(t, cfg, nil, simOptions{})
	hit := 0
	for _, r := range rep.Rounds {
		if slices.Contains(r.Faults, "churn") {
			hit++
			if r.Accepted == r.Selected {
				t.Errorf("round %d: a selected peer was away, yet all %d updates came", r.Round, r.Accepted)
			}
		} else if r.Accepted != r.Selected {
			t.Errorf("round %d: no churn, %d of %d accepted", r.Round, r.Accepted, r.Selected)
		}
	}
	if hit == 0 {
		t.Fatal("churn 0.3 over 10 rounds hit nothing")
	}
}

// TestLateAndLostUpdates: with a quorum below the selection, the updates
// that arrive after their round closed are late (reported with their
// round); on a lossy network some updates are lost.
func TestLateAndLostUpdates(t *testing.T) {
	cfg := testConfig()
	cfg.Quorum, cfg.Rounds = 0.6, 6
	rep := run(t, cfg, nil, simOptions{})
	late, wrongRound := 0, 0
	for _, r := range rep.Rounds {
		late += r.Late
		wrongRound += r.RejectedByReason["wrong-round"]
	}
	// The last round's late updates come after the run ends.
	if late == 0 || late != wrongRound {
		t.Errorf("%d late updates, %d rejected for their round: %+v", late, wrongRound, rep.Rounds)
	}
	cfg = testConfig()
	cfg.Net, cfg.Rounds, cfg.PerRound, cfg.RoundTimeoutMs = "lossy", 10, 20, 300
	cfg.Stragglers = "slow:1x30" // training takes about as long as the round: no resend in time
	rep = run(t, cfg, nil, simOptions{})
	lost := 0
	for _, r := range rep.Rounds {
		lost += r.Lost
	}
	if lost == 0 {
		t.Errorf("no update lost on a lossy network: %+v", rep.Rounds)
	}
}

// sparseTask gives training data to one peer in every: the others hold none.
type sparseTask struct {
	*fakeTask
	every int
}

func (s sparseTask) ClientSamples(c int) int {
	if c%s.every != 0 {
		return 0
	}
	return s.fakeTask.ClientSamples(c)
}

func (s sparseTask) Train(job task.Job) ([]byte, error) {
	if job.Client%s.every != 0 {
		return nil, errors.New("sparse: a peer without data trains")
	}
	return s.fakeTask.Train(job)
}

// TestPeersWithoutDataAreNotSelected: no round waits for its deadline
// because of peers without data, and few trainers ever get a machine.
func TestPeersWithoutDataAreNotSelected(t *testing.T) {
	cfg := testConfig()
	cfg.Peers, cfg.PerRound, cfg.Rounds = 20_000, 50, 4
	tk := sparseTask{&fakeTask{clients: cfg.Peers}, 97}
	s, err := newSim(context.Background(), cfg, tk, nil, simOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if err := s.loop(); err != nil {
		t.Fatal(err)
	}
	rep := s.finish()
	for _, r := range rep.Rounds {
		if r.Accepted != cfg.PerRound || r.SimMs > 10 {
			t.Errorf("round %+v: want %d accepted within milliseconds", r, cfg.PerRound)
		}
	}
	if s.materialised > 2*cfg.PerRound {
		t.Errorf("%d trainers hold a machine after the run, want at most %d", s.materialised, 2*cfg.PerRound)
	}
	cfg.PerRound = 300 // only 207 peers hold data
	_, err = simulate(context.Background(), cfg, tk, nil, simOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "per_round" || !strings.Contains(ce.Msg, "only 207 of the 20000 peers hold training data") {
		t.Errorf("err = %v", err)
	}
}

func TestResolveFillsHyperparameters(t *testing.T) {
	cfg, _, err := Resolve(Config{Scenario: "frl-mnist"})
	if err != nil {
		t.Fatal(err)
	}
	d := task.DefaultFRL(0)
	if cfg.LR != d.Hyper.LR || cfg.Momentum != d.Hyper.Momentum || cfg.WeightDecay != d.Hyper.WeightDecay ||
		cfg.Epochs != d.Hyper.Epochs || cfg.Batch != d.Hyper.Batch || cfg.LRDecay != d.LRDecay || cfg.LRSchedule != "cosine" {
		t.Errorf("frl-mnist hyperparameters %+v, want %+v", cfg.hyper(), d)
	}
	if !strings.Contains(cfg.AggregatorParams, "hampel_k=") || cfg.AggregatorDownMs != DefaultAggregatorDownMs {
		t.Errorf("aggregator params %q, down %d ms", cfg.AggregatorParams, cfg.AggregatorDownMs)
	}
	// A report's config resolves to itself.
	again, _, err := Resolve(cfg)
	if err != nil || again != cfg {
		t.Errorf("resolving an effective config: %+v, %v", again, err)
	}
	lr, _, err := Resolve(Config{Scenario: "fedavg-mnist", LR: 0.05, Aggregator: "trimmed-mean"})
	if err != nil || lr.LR != 0.05 || lr.Momentum != task.DefaultFedAvg(0).Hyper.Momentum || lr.AggregatorParams != "coordinate-wise mean without the lowest and highest values; trim_fraction=0.4 per end" {
		t.Errorf("fedavg-mnist with lr 0.05: %+v, %v", lr, err)
	}
	lora, _, err := Resolve(Config{Scenario: "lora-mnist", Aggregator: task.MergeFedAvg})
	if err != nil || lora.LR != task.DefaultLoRA(0).DenseHyper.LR {
		t.Errorf("lora-mnist with fedavg: lr %v, %v", lora.LR, err)
	}
	_, _, err = Resolve(Config{Scenario: "frl-mnist", AggregatorParams: "trim_fraction=0.1"})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "aggregator_params" {
		t.Errorf("setting aggregator_params: %v", err)
	}
}

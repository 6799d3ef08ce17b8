package genesis

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/task"
)

// TestFRLLoRADefaults: a minimal frl-lora-mnist file gets task.DefaultFRLLoRA's
// settings (its ranking codec, bucket-mask:16, included) and no compression.
func TestFRLLoRADefaults(t *testing.T) {
	p := testPeers(t, 3, 9)
	g := mustParse(t, `name = "x"
aggregator = "`+p[0]+`"
members = ["`+p[1]+`", "`+p[2]+`"]
scenario = "frl-lora-mnist"
per_round = 2
round_timeout = "1s"
task.base_model = "b.safetensors"
task.base_model_hash = "`+strings.Repeat("Cd", 32)+`"
`)
	d := task.DefaultFRLLoRA(0)
	want := Genesis{
		Name: "x", Aggregator: p[0], Members: p[1:], Scenario: "frl-lora-mnist", AggregatorName: "vote-clamp",
		PerRound: 2, Quorum: 2, MinUpdates: 1,
		RoundTimeout: Duration(time.Second), Retry: Duration(100 * time.Millisecond), SilenceTimeout: Duration(2 * time.Second),
		MaxUpdateBytes: 8 << 20, MaxModelBytes: 64 << 20, ChunkBytes: 1 << 20,
		Task: TaskParams{LR: d.Hyper.LR, Momentum: ptr(d.Hyper.Momentum), WeightDecay: ptr(d.Hyper.WeightDecay),
			Epochs: d.Hyper.Epochs, Batch: d.Hyper.Batch, Cosine: ptr(d.Hyper.Cosine), LRDecay: d.LRDecay,
			RankingCodec: "bucket-mask:16", Rank: 64, BaseModel: "b.safetensors", BaseModelHash: strings.Repeat("cd", 32)},
	}
	if !reflect.DeepEqual(*g, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", *g, want)
	}
	if d.Codec != task.DefaultRankingCodec || d.Rank != 64 || d.Hyper.LR != 0.1 {
		t.Fatalf("task.DefaultFRLLoRA changed (%+v): update this test and the README", d)
	}
}

// TestFRLLoRAEncode: a frl-lora-mnist genesis encodes with its rank, ranking
// codec and base model, without lora-mnist's compression, and reads back
// to the same genesis and id.
func TestFRLLoRAEncode(t *testing.T) {
	dir := t.TempDir()
	for name, change := range map[string]func(g *Genesis){
		"defaults": func(*Genesis) {},
		"custom": func(g *Genesis) {
			g.AggregatorName, g.Task.Rank, g.Task.RankingCodec, g.Task.Epochs = "vote-robust", 8, "delta", 1
			g.Task.BaseModelHash = strings.ToUpper(g.Task.BaseModelHash)
		},
		"packed": func(g *Genesis) { g.Task.RankingCodec = "packed" },
	} {
		t.Run(name, func(t *testing.T) {
			g := frlLoRASample(t, dir)
			change(g)
			b, err := g.Encode()
			if err != nil {
				t.Fatal(err)
			}
			f := g.filled()
			for _, line := range []string{
				`scenario = "frl-lora-mnist"`,
				"rank = " + map[bool]string{true: "64", false: "8"}[name != "custom"],
				`ranking_codec = "` + f.Task.RankingCodec + `"`,
				`base_model = "` + g.Task.BaseModel + `"`,
				`base_model_hash = "` + strings.ToLower(g.Task.BaseModelHash) + `"`,
				`Left out: "bucket-mask:16".`,
			} {
				if !bytes.Contains(b, []byte(line+"\n")) {
					t.Errorf("the file lacks %q:\n%s", line, b)
				}
			}
			if bytes.Contains(b, []byte("compression")) {
				t.Errorf("the file has a compression:\n%s", b)
			}
			back, err := Parse(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			if !reflect.DeepEqual(back, f) || back.ID() != g.ID() {
				t.Fatalf("read back\n%+v\nwant\n%+v", back, f)
			}
		})
	}
}

// TestFRLLoRAValidate: frl-lora-mnist's own settings are checked, and
// lora-mnist's compression is refused, each error naming its key.
func TestFRLLoRAValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, field, msg string
		change           func(g *Genesis)
	}{
		{"compression", "task.compression", "only lora-mnist uploads adapter factors, not frl-lora-mnist", func(g *Genesis) { g.Task.Compression = "int8" }},
		{"unknown ranking codec", "task.ranking_codec", "", func(g *Genesis) { g.Task.RankingCodec = "zip" }},
		{"bucket of 1", "task.ranking_codec", "", func(g *Genesis) { g.Task.RankingCodec = "bucket:1" }},
		{"negative rank", "task.rank", "must be in 1..4096", func(g *Genesis) { g.Task.Rank = -1 }},
		{"huge rank", "task.rank", "must be in 1..4096", func(g *Genesis) { g.Task.Rank = 4097 }},
		{"no base_model", "task.base_model", "frl-lora-mnist fine-tunes a base model", func(g *Genesis) { g.Task.BaseModel = "" }},
		{"no base_model_hash", "task.base_model_hash", "frl-lora-mnist needs the SHA-256", func(g *Genesis) { g.Task.BaseModelHash = "" }},
		{"short base_model_hash", "task.base_model_hash", "not a hex SHA-256", func(g *Genesis) { g.Task.BaseModelHash = "abcd" }},
		{"lora aggregation", "aggregation", `"lora-svd" is not an aggregation of frl-lora-mnist (have: vote-clamp, vote-robust, vote, vote-median)`, func(g *Genesis) { g.AggregatorName = "lora-svd" }},
		{"zero lr_decay", "task.lr_decay", "", func(g *Genesis) { g.Task.LRDecay = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := frlLoRASample(t, dir)
			if err := g.Validate(); err != nil {
				t.Fatalf("the sample is invalid: %v", err)
			}
			tc.change(g)
			err := g.Validate()
			var ge *Error
			if !errors.As(err, &ge) || ge.Field != tc.field || !strings.Contains(ge.Msg, tc.msg) {
				t.Fatalf("error %v, want one about %s saying %q", err, tc.field, tc.msg)
			}
			if _, err := g.BuildTask(task.Data{}); err == nil {
				t.Fatal("BuildTask of an invalid genesis")
			}
		})
	}
	// The other scenarios refuse the settings frl-lora-mnist has, and say
	// which scenarios have them.
	g := sample(t)
	g.Task.Rank = 8
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "only frl-lora-mnist and lora-mnist have it, not frl-mnist") {
		t.Fatalf("frl-mnist with a rank: %v", err)
	}
	g = sample(t)
	g.Scenario, g.Task.RankingCodec = "fedavg-mnist", "delta"
	if err := g.Validate(); err == nil || !strings.Contains(err.Error(), "only frl-lora-mnist and frl-mnist send rankings, not fedavg-mnist") {
		t.Fatalf("fedavg-mnist with a ranking codec: %v", err)
	}
}

// TestFRLLoRAID: every setting that changes a frl-lora-mnist model changes
// the id (the rank, the ranking codec, the base model's hash, the
// aggregation, the training), the base model's path and the hash's case do
// not, and the id is pinned.
func TestFRLLoRAID(t *testing.T) {
	dir := t.TempDir()
	g := frlLoRASample(t, dir)
	id := g.ID()
	ids := map[string]string{id: "the sample"}
	for name, change := range map[string]func(g *Genesis){
		"rank":                    func(g *Genesis) { g.Task.Rank = 8 },
		"packed codec":            func(g *Genesis) { g.Task.RankingCodec = "packed" },
		"delta codec":             func(g *Genesis) { g.Task.RankingCodec = "delta" },
		"bucket-mask:8":           func(g *Genesis) { g.Task.RankingCodec = "bucket-mask:8" },
		"base model hash":         func(g *Genesis) { g.Task.BaseModelHash = strings.Repeat("0", 64) },
		"aggregation":             func(g *Genesis) { g.AggregatorName = "vote" },
		"lr":                      func(g *Genesis) { g.Task.LR = 0.05 },
		"epochs":                  func(g *Genesis) { g.Task.Epochs = 1 },
		"lora-mnist on that base": func(g *Genesis) { g.Scenario = "lora-mnist" },
	} {
		c := frlLoRASample(t, dir)
		change(c)
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := ids[c.ID()]; dup {
			t.Errorf("changing the %s gives the id of %s", name, other)
		}
		ids[c.ID()] = name
	}
	same := *g
	same.Task.BaseModel = "elsewhere/base.safetensors"
	same.Task.BaseModelHash = strings.ToUpper(g.Task.BaseModelHash)
	same.Task.Rank, same.Task.RankingCodec, same.AggregatorName = 64, "bucket-mask:16", "vote-clamp" // the defaults, written out
	if same.ID() != id {
		t.Error("the base model's path, the hash's case or defaults written out changed the id")
	}

	pinned := &Genesis{
		Name: "pin", Aggregator: "12D3KooWQxoEx3jK2UgWFQ2sDvrsAGxeTUKHWvhgnLMXMkygPny5",
		Members:  []string{"12D3KooWNcgSqVzSp5XJj6zZtPwVhXx1WArHoAE2srtKSunTvPHL"},
		Scenario: "frl-lora-mnist", Seed: 3, Rounds: 3, PerRound: 1, RoundTimeout: Duration(time.Minute),
		Task: TaskParams{Rank: 8, BaseModel: "ignored", BaseModelHash: strings.Repeat("ab", 32)},
	}
	want := "fedrank-genesis/v1\n" +
		`{"name":"pin","aggregator":"12D3KooWQxoEx3jK2UgWFQ2sDvrsAGxeTUKHWvhgnLMXMkygPny5",` +
		`"members":["12D3KooWNcgSqVzSp5XJj6zZtPwVhXx1WArHoAE2srtKSunTvPHL"],` +
		`"scenario":"frl-lora-mnist","aggregation":"vote-clamp","seed":3,"rounds":3,"per_round":1,"quorum":1,"min_updates":1,` +
		`"round_timeout_ms":60000,"retry_ms":6000,"silence_timeout_ms":120000,"max_update_bytes":8388608,"max_model_bytes":67108864,"chunk_bytes":1048576,` +
		`"task":{"lr":0.1,"momentum":0.9,"weight_decay":0.0001,"epochs":2,"batch":8,"cosine":true,"lr_decay":0.999,"rank":8,"compression":"",` +
		`"base_model_hash":"` + strings.Repeat("ab", 32) + `","ranking_codec":"bucket-mask:16"}}`
	if got := string(pinned.Canonical()); got != want {
		t.Fatalf("canonical encoding\n%s\nwant\n%s", got, want)
	}
}

// TestFRLLoRALocalRank: a frl-lora-mnist member cannot train another
// adapter rank than the federation's (train.rank): its rankings would be of
// another chain, which the vote cannot count with the others.
func TestFRLLoRALocalRank(t *testing.T) {
	g := frlLoRASample(t, t.TempDir())
	g.Task.Rank = 8
	for _, r := range []int{1, 4, 8, 9} {
		_, err := g.BuildLocalTask(task.Data{}, Local{Rank: r})
		if err == nil || !strings.Contains(err.Error(), "cannot be voted") || !strings.Contains(err.Error(), "rank-8 adapters") {
			t.Fatalf("train.rank %d: %v, want a refusal", r, err)
		}
	}
	if _, err := g.BuildLocalTask(task.Data{}, Local{}); err != nil {
		t.Fatal(err)
	}
}

// TestFRLLoRAMatchesSimulator: a frl-lora-mnist genesis on the simulator's
// base model builds the simulator's task: the same initial model for the
// default settings, and, simulated on the simulator's split with custom
// settings, the same model hash every round as `node sim` of those
// settings.
func TestFRLLoRAMatchesSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains the simulator's base model (about 3 s unless cached) and simulates; skipped with -short")
	}
	sc, _ := simnet.LookupScenario("frl-lora-mnist")
	genesisOf := func(t *testing.T, sim task.Task, seed uint64) *Genesis {
		frl, ok := sim.(*task.FRL)
		if !ok {
			t.Fatalf("the simulator's task is a %T", sim)
		}
		file, err := frl.Base().Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := frl.Base().Meta["seed"], strconv.FormatUint(splitmix.Nth(seed, pretrainStream), 10); got != want {
			t.Fatalf("the simulator's base was pre-trained with seed %s, PretrainSeed says %s", got, want)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "base.safetensors"), file, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(file)
		g := sample(t)
		g.Scenario, g.Seed = "frl-lora-mnist", seed
		g.Task = TaskParams{BaseModel: filepath.Join(dir, "base.safetensors"), BaseModelHash: hex.EncodeToString(sum[:])}
		return g
	}
	for _, seed := range []uint64{1, 3} {
		cfg := sc.Defaults
		cfg.Scenario, cfg.Seed = "frl-lora-mnist", seed
		sim, err := sc.Build(cfg)
		if err != nil {
			t.Fatal(err)
		}
		want, err := sim.InitialModel()
		if err != nil {
			t.Fatal(err)
		}
		g := genesisOf(t, sim, seed)
		tk, err := g.BuildTask(task.Data{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tk.InitialModel(); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("seed %d: the initial model differs from the simulator's (%v)", seed, err)
		}
		if !reflect.DeepEqual(tk.Info(), sim.Info()) {
			t.Fatalf("seed %d: task %+v, the simulator's %+v", seed, tk.Info(), sim.Info())
		}
	}

	// Two rounds with settings other than the defaults, each reaching the
	// task: the genesis's task in the simulator gives the simulator's models.
	cfg, sc, err := simnet.Resolve(simnet.Config{Scenario: "frl-lora-mnist", Seed: 3, Rounds: 2, PerRound: 3,
		Aggregator: "vote", Rank: 8, RankingCodec: "delta", LR: 0.05, Epochs: 1, Batch: 16, LRDecay: 0.9, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := simnet.Simulate(context.Background(), cfg, sim, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := genesisOf(t, sim, 3)
	g.AggregatorName = "vote"
	g.Task.Rank, g.Task.RankingCodec, g.Task.LR, g.Task.Epochs, g.Task.Batch, g.Task.LRDecay = 8, "delta", 0.05, 1, 16, 0.9
	// The simulator's split of MNIST (simnet's mnistData).
	dir, err := data.MNISTDir("")
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := data.LoadMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := data.ParseSpec(cfg.Partition)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := spec.Split(train.Labels, train.Classes, cfg.Peers, splitmix.Nth(cfg.Seed, simnetConst(t, "seedPartition")))
	if err != nil {
		t.Fatal(err)
	}
	d := task.Data{Parts: parts}
	if d.Train, err = model.NewInputs(train, data.MNISTMean, data.MNISTStd); err != nil {
		t.Fatal(err)
	}
	if d.Test, err = model.NewInputs(test, data.MNISTMean, data.MNISTStd); err != nil {
		t.Fatal(err)
	}
	tk, err := g.BuildTask(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := simnet.Simulate(context.Background(), cfg, tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rounds) != 2 || len(want.Rounds) != 2 {
		t.Fatalf("%d and %d rounds, want 2", len(got.Rounds), len(want.Rounds))
	}
	base := want.InitialAccuracy
	for i := range want.Rounds {
		w, r := want.Rounds[i], got.Rounds[i]
		t.Logf("round %d: accuracy %.4f (simulator %.4f, initial %.4f), %d accepted", r.Round, r.Accuracy, w.Accuracy, base, r.Accepted)
		if r.ModelHash != w.ModelHash || r.Accuracy != w.Accuracy || r.Accepted != 3 {
			t.Errorf("round %d: the genesis's task gives model %s (accuracy %v, %d accepted), the simulator's %s (%v)",
				r.Round, r.ModelHash, r.Accuracy, r.Accepted, w.ModelHash, w.Accuracy)
		}
	}
	if got.InitialAccuracy != base || got.Rounds[0].ModelHash == got.Rounds[1].ModelHash {
		t.Errorf("initial accuracy %v (simulator %v); round models %s, %s", got.InitialAccuracy, base, got.Rounds[0].ModelHash, got.Rounds[1].ModelHash)
	}
}

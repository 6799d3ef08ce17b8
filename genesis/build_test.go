package genesis

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/simnet"
	"github.com/fedrank/fedrank/task"
)

// simnetConst evaluates an unexported constant of package simnet from its
// source, so that the seeds the genesis derives cannot drift from the
// simulator's without a test failing.
func simnetConst(t *testing.T, name string) uint64 {
	t.Helper()
	fset := token.NewFileSet()
	var files []*ast.File
	for _, f := range []string{"rand.go", "builtin.go", "builtin_lora.go"} {
		af, err := parser.ParseFile(fset, filepath.Join("..", "simnet", f), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, af)
	}
	// Imports and everything but constants fail to resolve; that is fine.
	conf := types.Config{Importer: noImporter{}, Error: func(error) {}}
	pkg, _ := conf.Check("simnet", fset, files, nil)
	c, ok := pkg.Scope().Lookup(name).(*types.Const)
	if !ok {
		t.Fatalf("simnet has no constant %s", name)
	}
	v, err := strconv.ParseUint(c.Val().ExactString(), 0, 64)
	if err != nil {
		t.Fatalf("simnet.%s = %v: %v", name, c.Val(), err)
	}
	return v
}

type noImporter struct{}

func (noImporter) Import(path string) (*types.Package, error) {
	return nil, errors.New("no imports")
}

// TestSeedsMatchSimulator: the streams the genesis derives its seeds from
// are the simulator's.
func TestSeedsMatchSimulator(t *testing.T) {
	if got := simnetConst(t, "seedModel"); got != modelStream {
		t.Errorf("simnet seedModel %d, genesis %d", got, modelStream)
	}
	if got := simnetConst(t, "seedPretrain"); got != pretrainStream {
		t.Errorf("simnet seedPretrain %#x, genesis %#x", got, pretrainStream)
	}
	if got := simnetConst(t, "streamSelect"); got != selectStream {
		t.Errorf("simnet streamSelect %#x, genesis %#x", got, selectStream)
	}
	g := sample(t)
	if g.ModelSeed() != splitmix.Nth(7, 1) || g.SelectSeed() != splitmix.Derive(7, selectStream) || g.PretrainSeed() != splitmix.Nth(7, 0x10aa) {
		t.Fatal("derived seeds")
	}
}

// TestNodeConfig maps the genesis onto each role's node.Config.
func TestNodeConfig(t *testing.T) {
	g := sample(t)
	g.Members[0], g.Members[3] = g.Members[3], g.Members[0]
	agg, err := g.NodeConfig(g.Aggregator)
	if err != nil {
		t.Fatal(err)
	}
	want := node.Config{
		ID: g.Aggregator, Federation: g.ID(), Role: node.RoleAggregator, Aggregator: g.Aggregator,
		Members:  slices.Sorted(slices.Values(g.Members)),
		PerRound: 3, Quorum: 2, MinUpdates: 1, RoundTimeoutMs: 120_000, RetryMs: 12_000, Rounds: 30,
		Seed:           splitmix.Derive(7, selectStream),
		MaxUpdateBytes: 8 << 20, MaxModelBytes: 64 << 20, ChunkBytes: 1 << 20, SilenceMs: 240_000,
	}
	if !configEqual(agg, want) {
		t.Fatalf("aggregator config\n%+v\nwant\n%+v", agg, want)
	}
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		t.Fatal(err)
	}
	agg.NewAggregator = func() (aggregate.Aggregator, error) { return tk.NewAggregator(g.AggregatorName) }
	if agg.InitialModel, err = tk.InitialModel(); err != nil {
		t.Fatal(err)
	}
	if err := agg.Validate(); err != nil {
		t.Fatalf("completed aggregator config: %v", err)
	}

	for _, m := range g.Members {
		tr, err := g.NodeConfig(m)
		if err != nil {
			t.Fatal(err)
		}
		w := want
		w.ID, w.Role = m, node.RoleTrainer
		if !configEqual(tr, w) {
			t.Fatalf("trainer config\n%+v\nwant\n%+v", tr, w)
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("trainer config: %v", err)
		}
	}
	if _, err := g.NodeConfig(testPeers(t, 1, 99)[0]); err == nil {
		t.Fatal("a config for a peer outside the federation")
	}
}

func configEqual(a, b node.Config) bool {
	return a.ID == b.ID && a.Federation == b.Federation && a.Role == b.Role && a.Aggregator == b.Aggregator &&
		slices.Equal(a.Members, b.Members) && a.PerRound == b.PerRound && a.Quorum == b.Quorum &&
		a.MinUpdates == b.MinUpdates && a.RoundTimeoutMs == b.RoundTimeoutMs && a.RetryMs == b.RetryMs &&
		a.Rounds == b.Rounds && a.Seed == b.Seed && a.MaxUpdateBytes == b.MaxUpdateBytes &&
		a.MaxModelBytes == b.MaxModelBytes && a.ChunkBytes == b.ChunkBytes && a.SilenceMs == b.SilenceMs &&
		a.Select == nil && a.NewAggregator == nil && a.InitialModel == nil && a.Sign == nil && a.Verify == nil
}

// synthetic is a small random 28x28, 10-class data set.
func synthetic(t *testing.T, n int) *model.Inputs {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	set := &data.Set{N: n, Rows: 28, Cols: 28, Classes: 10, Pixels: make([]uint8, n*784), Labels: make([]uint8, n)}
	for k := range n {
		set.Labels[k] = uint8(rng.IntN(10))
		for i := range 784 {
			if rng.IntN(5) == 0 {
				set.Pixels[k*784+i] = uint8(rng.IntN(256))
			}
		}
	}
	in, err := model.NewInputs(set, data.MNISTMean, data.MNISTStd)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestBuildTask builds every scenario for a trainer (its own samples, no
// test set) and for the aggregator (test set only), runs a round by hand, and
// checks that the genesis's hyperparameters reach the task: a trainer's
// update equals the one of a task built directly with them.
func TestBuildTask(t *testing.T) {
	dir := t.TempDir()
	in := synthetic(t, 24)
	mine := data.Partition{{0, 3, 5, 8, 13, 21}}
	custom := TaskParams{LR: 0.1, Momentum: ptr(0.5), WeightDecay: ptr(0.0), Epochs: 1, Batch: 4, Cosine: ptr(false), LRDecay: 0.9}
	customHyper := model.Hyper{LR: 0.1, Momentum: 0.5, WeightDecay: 0, Epochs: 1, Batch: 4, Cosine: false}
	for _, tc := range []struct {
		name, scenario, aggregation string
		params                      TaskParams
		direct                      func(seed uint64, base *task.Base, d task.Data) (task.Task, error)
	}{
		{"frl default", "frl-mnist", "", TaskParams{}, func(seed uint64, _ *task.Base, d task.Data) (task.Task, error) {
			return task.NewFRL(task.DefaultFRL(seed), d)
		}},
		{"frl custom", "frl-mnist", "vote", custom, func(seed uint64, _ *task.Base, d task.Data) (task.Task, error) {
			c := task.DefaultFRL(seed)
			c.Hyper, c.LRDecay = customHyper, 0.9
			return task.NewFRL(c, d)
		}},
		{"fedavg custom", "fedavg-mnist", "multi-krum", custom, func(seed uint64, _ *task.Base, d task.Data) (task.Task, error) {
			c := task.DefaultFedAvg(seed)
			c.Hyper, c.LRDecay = customHyper, 0.9
			return task.NewDense(c, d)
		}},
		{"lora default", "lora-mnist", "", TaskParams{}, func(seed uint64, b *task.Base, d task.Data) (task.Task, error) {
			return task.NewLoRA(task.DefaultLoRA(seed), b, d)
		}},
		{"lora custom", "lora-mnist", "lora-avg", TaskParams{LR: 0.1, Momentum: ptr(0.5), WeightDecay: ptr(0.0), Epochs: 1, Batch: 4, Cosine: ptr(false), LRDecay: 0.9, Rank: 2, Compression: "fp16"},
			func(seed uint64, b *task.Base, d task.Data) (task.Task, error) {
				c := task.DefaultLoRA(seed)
				c.Merge, c.Rank, c.Compression, c.Hyper, c.LRDecay = "lora-avg", 2, "fp16", customHyper, 0.9
				return task.NewLoRA(c, b, d)
			}},
		{"lora fedavg custom", "lora-mnist", "fedavg", custom, func(seed uint64, b *task.Base, d task.Data) (task.Task, error) {
			c := task.DefaultLoRA(seed)
			c.Merge, c.DenseHyper, c.LRDecay = "fedavg", customHyper, 0.9
			return task.NewLoRA(c, b, d)
		}},
		{"frl-lora default", "frl-lora-mnist", "", TaskParams{}, func(seed uint64, b *task.Base, d task.Data) (task.Task, error) {
			return task.NewFRLLoRA(task.DefaultFRLLoRA(seed), b, d)
		}},
		{"frl-lora custom", "frl-lora-mnist", "vote-median", TaskParams{LR: 0.1, Momentum: ptr(0.5), WeightDecay: ptr(0.0), Epochs: 1, Batch: 4, Cosine: ptr(false), LRDecay: 0.9, Rank: 3, RankingCodec: "delta"},
			func(seed uint64, b *task.Base, d task.Data) (task.Task, error) {
				c := task.DefaultFRLLoRA(seed)
				c.Hyper, c.LRDecay, c.Rank, c.Codec = customHyper, 0.9, 3, "delta"
				return task.NewFRLLoRA(c, b, d)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := sample(t)
			if scenarios[tc.scenario].base {
				g = loraSample(t, dir)
				tc.params.BaseModel, tc.params.BaseModelHash = g.Task.BaseModel, g.Task.BaseModelHash
			}
			g.Scenario, g.AggregatorName, g.Task = tc.scenario, tc.aggregation, tc.params
			trainer, err := g.BuildTask(task.Data{Train: in, Parts: mine})
			if err != nil {
				t.Fatal(err)
			}
			aggTask, err := g.BuildTask(task.Data{Test: in})
			if err != nil {
				t.Fatal(err)
			}
			m, err := aggTask.InitialModel()
			if err != nil {
				t.Fatal(err)
			}
			if tm, err := trainer.InitialModel(); err != nil || !bytes.Equal(tm, m) {
				t.Fatalf("the trainer's initial model differs (%v)", err)
			}
			job := task.Job{Client: 0, Round: 3, Model: m, Seed: 5}
			update, err := trainer.Train(job)
			if err != nil {
				t.Fatal(err)
			}
			var base *task.Base
			if scenarios[tc.scenario].base {
				if base, err = g.LoadBase(); err != nil {
					t.Fatal(err)
				}
			}
			direct, err := tc.direct(g.ModelSeed(), base, task.Data{Train: in, Parts: mine})
			if err != nil {
				t.Fatal(err)
			}
			if want, err := direct.Train(job); err != nil || !bytes.Equal(update, want) {
				t.Fatalf("the genesis's task trains differently from the task built directly (%v)", err)
			}
			if _, err := aggTask.Train(job); !errors.Is(err, task.ErrNoTrainData) {
				t.Fatalf("the aggregator trained: %v", err)
			}
			if _, err := trainer.Evaluate(m); !errors.Is(err, task.ErrNoTestData) {
				t.Fatalf("a trainer without test data evaluated: %v", err)
			}
			a, err := aggTask.NewAggregator(g.AggregatorName)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Begin(1, m); err != nil {
				t.Fatal(err)
			}
			job.Round = 1
			for c := range 3 {
				job.Seed = uint64(c)
				u, err := trainer.Train(job)
				if err != nil {
					t.Fatal(err)
				}
				if err := a.Add(aggregate.Update{Peer: strconv.Itoa(c), Samples: int64(len(mine[0])), Payload: u}); err != nil {
					t.Fatal(err)
				}
			}
			next, err := a.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := aggTask.Evaluate(next); err != nil || ev.Samples != in.N {
				t.Fatalf("evaluation %+v, %v", ev, err)
			}
			if _, ok := aggTask.(task.Exporter); !ok {
				t.Fatal("the task cannot export its models")
			}
		})
	}
}

// TestBuildTaskBaseModel: lora-mnist refuses a base model file that is
// missing or whose hash differs.
func TestBuildTaskBaseModel(t *testing.T) {
	dir := t.TempDir()
	g := loraSample(t, dir)
	if _, err := g.BuildTask(task.Data{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(g.Task.BaseModel)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(g.Task.BaseModel, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var ge *Error
	if _, err := g.BuildTask(task.Data{}); !errors.As(err, &ge) || ge.Field != "task.base_model_hash" {
		t.Fatalf("changed base model: %v", err)
	}
	// A file of the right hash that is not a model.
	junk := []byte("not a model")
	sum := sha256.Sum256(junk)
	if err := os.WriteFile(g.Task.BaseModel, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	g.Task.BaseModelHash = hex.EncodeToString(sum[:])
	if _, err := g.BuildTask(task.Data{}); !errors.As(err, &ge) || ge.Field != "task.base_model" {
		t.Fatalf("junk base model: %v", err)
	}
	g.Task.BaseModel = filepath.Join(dir, "missing.safetensors")
	if _, err := g.BuildTask(task.Data{}); !errors.As(err, &ge) || ge.Field != "task.base_model" {
		t.Fatalf("missing base model: %v", err)
	}
}

// TestMatchesSimulator: a genesis of seed S starts from the initial model of
// `node sim --seed S` for the same scenario, and accepts the same
// aggregations.
func TestMatchesSimulator(t *testing.T) {
	for _, name := range Scenarios() {
		sc, ok := simnet.LookupScenario(name)
		if !ok {
			t.Fatalf("the simulator has no scenario %s", name)
		}
		if !slices.Equal(sc.Aggregators, Aggregations(name)) {
			t.Errorf("%s: simulator aggregations %v, genesis %v", name, sc.Aggregators, Aggregations(name))
		}
	}
	for _, name := range []string{"frl-mnist", "fedavg-mnist"} {
		for _, seed := range []uint64{1, 42} {
			sc, _ := simnet.LookupScenario(name)
			cfg := sc.Defaults
			cfg.Scenario, cfg.Seed = name, seed
			start := time.Now()
			sim, err := sc.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: simulator task built in %v", name, time.Since(start))
			want, err := sim.InitialModel()
			if err != nil {
				t.Fatal(err)
			}
			g := sample(t)
			g.Scenario, g.Seed = name, seed
			tk, err := g.BuildTask(task.Data{})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := tk.InitialModel(); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s seed %d: the initial model differs from the simulator's (%v)", name, seed, err)
			}
		}
	}

	t.Run("lora-mnist", func(t *testing.T) {
		if testing.Short() {
			t.Skip("pre-trains the simulator's base model (about 3 s unless cached); skipped with -short")
		}
		sc, _ := simnet.LookupScenario("lora-mnist")
		for _, agg := range []string{"lora-svd", "lora-ffa", "lora-median", "fedavg"} {
			cfg := sc.Defaults
			cfg.Scenario, cfg.Seed, cfg.Aggregator = "lora-mnist", 3, agg
			sim, err := sc.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := sim.InitialModel()
			if err != nil {
				t.Fatal(err)
			}
			base := sim.(*task.LoRA).Base()
			file, err := base.Encode()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "base.safetensors"), file, 0o644); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(file)
			g := sample(t)
			g.Scenario, g.Seed, g.AggregatorName = "lora-mnist", 3, agg
			g.Task = TaskParams{BaseModel: filepath.Join(dir, "base.safetensors"), BaseModelHash: hex.EncodeToString(sum[:])}
			if got := base.Meta["seed"]; got != strconv.FormatUint(g.PretrainSeed(), 10) {
				t.Fatalf("the simulator's base was pre-trained with seed %s, PretrainSeed says %d", got, g.PretrainSeed())
			}
			tk, err := g.BuildTask(task.Data{})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := tk.InitialModel(); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: the initial model differs from the simulator's (%v)", agg, err)
			}
		}
	})
}

// TestInitialModelPortable: the initial models of a seed are the same bytes
// on every architecture. CI runs this package's tests under qemu on arm64
// and armv7 as well, against these SHA-256 hashes computed on amd64: a
// mixed-architecture federation needs its members to agree on round 0.
// (Local training is not bit-for-bit portable, see README, "Edge
// devices"; the aggregator's result is the model, so federations agree on
// every later round too.)
func TestInitialModelPortable(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		seed     uint64
		want     string
	}{
		{"frl-mnist", 1, "5a4d2f6bcf3bf3750355c5c89455a0b3a62d6742609c828442da17d02d572233"},
		{"frl-mnist", 42, "5800696756ea6c29db0a5ea7c84800c8e6f76fe853eab33c539c00474da5d2a1"},
		{"fedavg-mnist", 1, "e66e186b4fc7258ad1a49bb1ab707c8599739ca96131390d9e7c9a6686163e87"},
	} {
		g := sample(t)
		g.Scenario, g.Seed = tc.scenario, tc.seed
		tk, err := g.BuildTask(task.Data{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := tk.InitialModel()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(m)
		if got := hex.EncodeToString(sum[:]); got != tc.want {
			t.Errorf("%s seed %d on %s: initial model %s, want %s", tc.scenario, tc.seed, runtime.GOARCH, got, tc.want)
		}
	}
}

// TestEverySimulatorScenario: every simulator scenario is a genesis scenario,
// and every genesis scenario a simulator one.
func TestEverySimulatorScenario(t *testing.T) {
	var sim []string
	for _, sc := range simnet.Scenarios() {
		sim = append(sim, sc.Name)
	}
	slices.Sort(sim)
	if !slices.Equal(sim, Scenarios()) {
		t.Fatalf("simulator scenarios %v, genesis scenarios %v", sim, Scenarios())
	}
}

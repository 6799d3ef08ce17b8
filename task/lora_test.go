package task

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/lowrank"
	"github.com/fedrank/fedrank/model"
)

// smallPretrain is a quick base: 784-64-32-10 on digits 0-4, one epoch.
func smallPretrain(seed uint64) PretrainConfig {
	c := DefaultPretrain(seed)
	c.Sizes = []int{784, 64, 32, 10}
	c.Hyper.Epochs = 1
	c.Hyper.Batch = 64
	return c
}

var (
	smallBaseOnce sync.Once
	smallBase     *Base
	smallBaseErr  error
)

func loadSmallBase(t *testing.T) *Base {
	train, _, _ := loadMNIST(t)
	smallBaseOnce.Do(func() { smallBase, smallBaseErr = Pretrain(smallPretrain(3), train) })
	if smallBaseErr != nil {
		t.Fatal(smallBaseErr)
	}
	return smallBase
}

// TestPretrainCachedAndReproducible: the base is the same bits whether
// trained again or read back from the safetensors cache, and a damaged cache
// file is replaced.
func TestPretrainCachedAndReproducible(t *testing.T) {
	train, test, _ := loadMNIST(t)
	base := loadSmallBase(t)
	dir := t.TempDir()
	cached, err := CachedPretrain(dir, smallPretrain(3), train)
	if err != nil {
		t.Fatal(err)
	}
	if cached.Hash != base.Hash {
		t.Fatal("training the base twice gave different weights")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "base-*.safetensors"))
	if len(files) != 1 {
		t.Fatalf("cache holds %v", files)
	}
	again, err := CachedPretrain(dir, smallPretrain(3), nil) // nil data: must come from the file
	if err != nil || again.Hash != base.Hash || again.Meta["classes"] != "0,1,2,3,4" {
		t.Fatalf("cached base: %v, hash equal %v, meta %v", err, again != nil && again.Hash == base.Hash, again.Meta)
	}
	for l := range base.W {
		if !slices.Equal(again.W[l], base.W[l]) {
			t.Fatalf("layer %d differs after the safetensors round trip", l)
		}
	}
	if err := os.WriteFile(files[0], []byte("not safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixed, err := CachedPretrain(dir, smallPretrain(3), train)
	if err != nil || fixed.Hash != base.Hash {
		t.Fatalf("damaged cache: %v", err)
	}
	// About half the test digits: the base knows 0-4 only.
	ev := evalDense(t, base, test)
	if ev < 0.4 || ev > 0.53 {
		t.Fatalf("base accuracy %v, want about half", ev)
	}
}

func evalDense(t *testing.T, b *Base, test *model.Inputs) float64 {
	var pool sync.Pool
	pool.New = func() any { return model.NewEvaluator(b.Sizes) }
	return evaluate(&pool, b.W, model.ColumnSums(b.W[0], b.Sizes[0], b.Sizes[1]), test).Accuracy
}

// loraSmallData splits MNIST over 40 clients (IID: a few rounds of a few
// clients see every digit) and keeps 300 images per client.
func loraSmallData(t *testing.T) Data {
	train, test, _ := loadMNIST(t)
	parts, err := data.IID(train.N, 40, 2)
	if err != nil {
		t.Fatal(err)
	}
	for c := range parts {
		parts[c] = parts[c][:min(300, len(parts[c]))]
	}
	return Data{Train: train, Test: test, Parts: parts}
}

// TestLoRAFineTuningLearns runs a few rounds of every merge (and the dense
// baseline) on a small base and checks each lifts the accuracy over the base
// model, that the initial model is the base, and that lora-svd with
// heterogeneous ranks works.
func TestLoRAFineTuningLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("federated fine-tuning rounds; skipped with -short")
	}
	base := loadSmallBase(t)
	d := loraSmallData(t)
	baseAcc := evalDense(t, base, d.Test)
	for _, tc := range []struct {
		merge, codec string
		ranks        func(int) int
	}{
		{MergeSVD, "int8", nil},
		{MergeSVD, "fp16", func(c int) int { return 1 + c%4 }},
		{MergeAvg, "fp32", nil},
		{MergeFFA, "int8", nil},
		{MergeMedian, "int8", nil},
		{MergeFedAvg, "", nil},
	} {
		t.Run(tc.merge+"-"+tc.codec, func(t *testing.T) {
			cfg := DefaultLoRA(5)
			cfg.Merge, cfg.Compression, cfg.Ranks = tc.merge, tc.codec, tc.ranks
			cfg.Hyper.LR, cfg.DenseHyper.LR = 0.01, 0.01
			tk, err := NewLoRA(cfg, base, d)
			if err != nil {
				t.Fatal(err)
			}
			m0, _ := tk.InitialModel()
			ev0, err := tk.Evaluate(m0)
			if err != nil {
				t.Fatal(err)
			}
			if ev0.Accuracy != baseAcc {
				t.Fatalf("initial model scores %v, the base %v", ev0.Accuracy, baseAcc)
			}
			agg, err := tk.NewAggregator("")
			if err != nil {
				t.Fatal(err)
			}
			if agg.Name() != tc.merge {
				t.Fatalf("aggregator %q", agg.Name())
			}
			evals, _ := runRounds(t, tk, agg, 6, 8, 1)
			if acc := evals[len(evals)-1].Accuracy; acc < baseAcc+0.15 {
				t.Fatalf("accuracy %v after 6 rounds, base %v", acc, baseAcc)
			}
			if tc.merge == MergeSVD || tc.merge == MergeMedian {
				tr := tk.Truncation()
				if len(tr) != 6 || tr[5].Round != 6 || !(tr[5].Dropped >= 0 && tr[5].Dropped < 1) {
					t.Fatalf("truncation log %+v", tr)
				}
			}
		})
	}
}

// TestLoRAUpdateSizes: the upload of a rank-4 int8 adapter of LeNet-300-100
// is under 1% of the dense update.
func TestLoRAUpdateSizes(t *testing.T) {
	sizes := []int{784, 300, 100, 10}
	s := lowrank.Spec{Layers: []lowrank.Layer{{In: 784, Out: 300, Rank: 4, Alpha: 8}, {In: 300, Out: 100, Rank: 4, Alpha: 8}, {In: 100, Out: 10, Rank: 4, Alpha: 8}}}
	lora := s.UpdateSize(lowrank.Int8, []int{4, 4, 4})
	dense := len(aggregate.Spec{Sizes: sizes}.EncodeDenseUpdate(nil, [][]float32{make([]float32, 784*300), make([]float32, 300*100), make([]float32, 100*10)}))
	if lora*100 > dense {
		t.Fatalf("int8 rank-4 update %d bytes, dense %d", lora, dense)
	}
}

func TestLoRAConfigErrors(t *testing.T) {
	base := loadSmallBase(t)
	d := loraSmallData(t)
	for _, mut := range []func(*LoRAConfig){
		func(c *LoRAConfig) { c.Merge = "lora-nope" },
		func(c *LoRAConfig) { c.Rank = 0 },
		func(c *LoRAConfig) { c.Compression = "int4" },
		func(c *LoRAConfig) { c.Alpha = -1 },
		func(c *LoRAConfig) { c.LRDecay = 0 },
	} {
		c := DefaultLoRA(1)
		mut(&c)
		if _, err := NewLoRA(c, base, d); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	c := DefaultLoRA(1)
	c.Ranks = func(int) int { return 9 }
	tk, err := NewLoRA(c, base, d)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := tk.InitialModel()
	if _, err := tk.Train(Job{Client: 0, Round: 1, Model: m, Seed: 1}); err == nil || !strings.Contains(err.Error(), "rank 9") {
		t.Fatalf("client rank over the federation's: %v", err)
	}
	if _, err := tk.NewAggregator("fedavg"); err == nil {
		t.Fatal("a lora-svd task built a fedavg aggregator")
	}
}

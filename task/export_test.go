package task

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/model"
)

// smallBaseModel is a random 16-8-3 base for LoRA on smallData.
func smallBaseModel(t *testing.T) *Base {
	t.Helper()
	rng := rand.New(rand.NewPCG(8, 9))
	sizes := []int{16, 8, 3}
	w := make([][]float32, len(sizes)-1)
	for l := range w {
		w[l] = make([]float32, sizes[l]*sizes[l+1])
		for i := range w[l] {
			w[l][i] = float32(rng.NormFloat64() / math.Sqrt(float64(sizes[l])))
		}
	}
	b, err := NewBase(sizes, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func smallLoRA(t *testing.T, merge string, d Data) *LoRA {
	t.Helper()
	cfg := DefaultLoRA(3)
	cfg.Name, cfg.Merge, cfg.Rank, cfg.Compression = "lora-small", merge, 2, "fp32"
	cfg.Hyper.LR, cfg.DenseHyper.LR = 0.05, 0.05
	tk, err := NewLoRA(cfg, smallBaseModel(t), d)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// plainEval scores a dense safetensors file with a Dense task built for
// evaluation only: the "plain dense network" an exported model is for.
func plainEval(t *testing.T, file []byte, test *model.Inputs) Eval {
	t.Helper()
	sizes, w, _, err := model.DecodeDenseSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultFedAvg(0)
	cfg.Name, cfg.Sizes = "plain", sizes
	plain, err := NewDense(cfg, Data{Test: test})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := plain.Evaluate(plain.Spec().EncodeDenseModel(w))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestExportedModelEvaluatesTheSame: after two rounds of each task, the
// exported dense network scores exactly the task's accuracy (and loss, up to
// float rounding of LoRA's factored column sums).
func TestExportedModelEvaluatesTheSame(t *testing.T) {
	d := smallData(t)
	for _, tc := range []struct {
		name string
		tk   func() Task
		test func() *model.Inputs // nil: d.Test
	}{
		{"frl", func() Task { return smallFRL(t) }, nil},
		{"dense", func() Task { return smallDense(t) }, nil},
		{"lora-svd", func() Task { return smallLoRA(t, MergeSVD, d) }, nil},
		{"lora-ffa", func() Task { return smallLoRA(t, MergeFFA, d) }, nil},
		{"lora-fedavg", func() Task { return smallLoRA(t, MergeFedAvg, d) }, nil},
		// Rank-vote fine-tuning exports the base with its masked adapters
		// merged, not the adapters' factor chain.
		{"frl-lora", func() Task { return frlLoRASmall(t, DefaultRankingCodec) }, func() *model.Inputs { return loraSmallData(t).Test }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk := tc.tk()
			test := d.Test
			if tc.test != nil {
				test = tc.test()
			}
			agg, err := tk.NewAggregator("")
			if err != nil {
				t.Fatal(err)
			}
			initial, err := tk.InitialModel()
			if err != nil {
				t.Fatal(err)
			}
			_, m := runRounds(t, tk, agg, 2, 4, 1)
			if bytes.Equal(m, initial) {
				t.Fatal("training did not change the model")
			}
			want, err := tk.Evaluate(m)
			if err != nil {
				t.Fatal(err)
			}
			sizes, w, err := tk.(Exporter).DenseWeights(m)
			if err != nil {
				t.Fatal(err)
			}
			file, err := model.EncodeDenseSafetensors(sizes, w, map[string]string{"round": "2"})
			if err != nil {
				t.Fatal(err)
			}
			if tk, ok := tk.(*FRL); ok && tk.Base() != nil && !slices.Equal(sizes, tk.Base().Sizes) {
				t.Fatalf("exported sizes %v, the base's %v", sizes, tk.Base().Sizes)
			}
			got := plainEval(t, file, test)
			if got.Accuracy != want.Accuracy || got.Samples != want.Samples || math.Abs(got.Loss-want.Loss) > 1e-5*math.Max(1, want.Loss) {
				t.Fatalf("exported model scores %+v, the task %+v", got, want)
			}
			if tc.name == "frl" || tc.name == "dense" || tc.name == "lora-fedavg" {
				if got != want {
					t.Fatalf("exported model scores %+v, the task %+v: want identical", got, want)
				}
			}
			if _, _, err := tk.(Exporter).DenseWeights(m[:len(m)-1]); err == nil {
				t.Fatal("a truncated model exported")
			}
		})
	}
}

// TestTaskWithoutTrainingData: the aggregator's task (no training data, with
// or without a test set) has the trainers' initial model and aggregators,
// evaluates when it has a test set, and refuses to train; a trainer without
// a test set trains and refuses to evaluate.
func TestTaskWithoutTrainingData(t *testing.T) {
	full := smallData(t)
	builders := map[string]func(Data) (Task, error){
		"frl": func(d Data) (Task, error) {
			cfg := DefaultFRL(3)
			cfg.Sizes = []int{16, 8, 3}
			return NewFRL(cfg, d)
		},
		"dense": func(d Data) (Task, error) {
			cfg := DefaultFedAvg(3)
			cfg.Sizes = []int{16, 8, 3}
			return NewDense(cfg, d)
		},
		"lora": func(d Data) (Task, error) { return NewLoRA(DefaultLoRA(3), smallBaseModel(t), d) },
		"lora-fedavg": func(d Data) (Task, error) {
			cfg := DefaultLoRA(3)
			cfg.Merge = MergeFedAvg
			return NewLoRA(cfg, smallBaseModel(t), d)
		},
	}
	for name, build := range builders {
		t.Run(name, func(t *testing.T) {
			ref, err := build(full)
			if err != nil {
				t.Fatal(err)
			}
			m, err := ref.InitialModel()
			if err != nil {
				t.Fatal(err)
			}
			want, err := ref.Evaluate(m)
			if err != nil {
				t.Fatal(err)
			}
			update, err := ref.Train(Job{Client: 1, Round: 1, Model: m, Seed: 4})
			if err != nil {
				t.Fatal(err)
			}

			for _, d := range []Data{{Test: full.Test}, {}} {
				tk, err := build(d)
				if err != nil {
					t.Fatalf("test set %v: %v", d.Test != nil, err)
				}
				if tk.NumClients() != 0 {
					t.Fatalf("%d clients without training data", tk.NumClients())
				}
				if got, err := tk.InitialModel(); err != nil || !bytes.Equal(got, m) {
					t.Fatalf("initial model differs from the trainers' (%v)", err)
				}
				agg, err := tk.NewAggregator("")
				if err != nil {
					t.Fatal(err)
				}
				if err := agg.Begin(1, m); err != nil {
					t.Fatal(err)
				}
				if _, err := tk.Train(Job{Client: 0, Round: 1, Model: m}); !errors.Is(err, ErrNoTrainData) {
					t.Fatalf("Train without training data: %v", err)
				}
				if a, ok := tk.(Attackable); ok {
					if _, err := a.TrainFlipped(Job{Client: 0, Round: 1, Model: m}); !errors.Is(err, ErrNoTrainData) {
						t.Fatalf("TrainFlipped without training data: %v", err)
					}
				}
				got, err := tk.Evaluate(m)
				switch {
				case d.Test == nil && !errors.Is(err, ErrNoTestData):
					t.Fatalf("Evaluate without test data: %v", err)
				case d.Test != nil && (err != nil || got != want):
					t.Fatalf("Evaluate: %+v, %v; want %+v", got, err, want)
				}
			}

			trainer, err := build(Data{Train: full.Train, Parts: full.Parts})
			if err != nil {
				t.Fatal(err)
			}
			got, err := trainer.Train(Job{Client: 1, Round: 1, Model: m, Seed: 4})
			if err != nil || !bytes.Equal(got, update) {
				t.Fatalf("a trainer without test data trains differently (%v)", err)
			}
			if _, err := trainer.Evaluate(m); !errors.Is(err, ErrNoTestData) {
				t.Fatalf("Evaluate without test data: %v", err)
			}

			if _, err := build(Data{Test: full.Test, Parts: full.Parts}); err == nil {
				t.Fatal("a partition without training data was accepted")
			}
		})
	}
}

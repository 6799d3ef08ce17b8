package task

import (
	"bytes"
	"reflect"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/model"
)

// frlLoRASmall is rank-vote fine-tuning of the small base at rank 3 (the
// 32×10 head too), on loraSmallData, with the given codec.
func frlLoRASmall(t *testing.T, codec string) *FRL {
	c := DefaultFRLLoRA(9)
	c.Rank, c.Codec, c.Keep = 3, codec, 0.4
	c.Hyper.Epochs = 1
	tk, err := NewFRLLoRA(c, loadSmallBase(t), loraSmallData(t))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestFRLLoRAVotesLikeFRL: rank-vote fine-tuning goes through FRL's code
// path. Its uploads are FRL updates of a network of sizes AdapterChain (the
// adapters' factors) that an FRL task of those sizes decodes; its
// aggregators are FRL's, of the same types and names, in the same order;
// and the models they vote from its updates are, bit for bit, the ones the
// FRL task's aggregators and the aggregate package's votes give, for every
// ranking codec.
func TestFRLLoRAVotesLikeFRL(t *testing.T) {
	if DefaultFRLLoRA(0).Codec != DefaultRankingCodec {
		t.Fatalf("frl-lora-mnist's default codec %q, want frl-mnist's %q", DefaultFRLLoRA(0).Codec, DefaultRankingCodec)
	}
	base := loadSmallBase(t)
	for _, codec := range []string{DefaultRankingCodec, CodecPacked, CodecDelta, "bucket:8"} {
		tk := frlLoRASmall(t, codec)
		chain := model.AdapterChain(base.Sizes, []int{3, 3, 3})
		spec := aggregate.Spec{Seed: 9, Sizes: chain}
		if !reflect.DeepEqual(tk.Spec(), spec) {
			t.Fatalf("spec %+v, want %+v", tk.Spec(), spec)
		}
		frl, err := NewFRL(FRLConfig{Name: "frl", Sizes: chain, Seed: 9, Hyper: DefaultFRL(0).Hyper, LRDecay: 1, Codec: codec}, Data{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tk.Info().Aggregators, frl.Info().Aggregators; !slices.Equal(got, want) || tk.Info().DefaultAggregator != "vote-clamp" {
			t.Fatalf("aggregators %v (default %s), FRL's %v", got, tk.Info().DefaultAggregator, want)
		}
		m0, _ := tk.InitialModel()
		f0, _ := frl.InitialModel()
		if !bytes.Equal(m0, f0) {
			t.Fatal("initial model differs from the FRL task's of the same chain and seed")
		}
		var ups [][]byte
		for c := range 4 {
			u, err := tk.Train(Job{Client: c, Round: 1, Model: m0, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			ups = append(ups, u)
		}
		if codec == CodecPacked {
			order, err := spec.DecodeFRLUpdate(ups[0], nil)
			if err != nil {
				t.Fatalf("packed upload is not an FRL update of the chain: %v", err)
			}
			if len(order) != len(chain)-1 || len(order[0]) != 784*3 {
				t.Fatalf("upload has %d layers, first of %d edges", len(order), len(order[0]))
			}
		}
		direct := map[string]func(aggregate.Spec) (aggregate.Aggregator, error){
			"vote":        func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewVote(s) },
			"vote-robust": func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewFilteredVote(s) },
			"vote-clamp":  func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewClampedVote(s, 0) },
		}
		for _, name := range tk.Info().Aggregators {
			a, err := tk.NewAggregator(name)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := frl.NewAggregator(name)
			// The FRL task of the chain has its own bucket layout (its
			// masks' boundaries differ by a few positions): it takes
			// these updates only without its format check. The vote is
			// what is compared.
			b.(aggregate.RankingFormatter).RequireRankingFormat(aggregate.FormatAny, nil)
			if reflect.TypeOf(a) != reflect.TypeOf(b) || a.Name() != b.Name() {
				t.Fatalf("%s: aggregator %T %q, FRL's %T %q", name, a, a.Name(), b, b.Name())
			}
			aggs := []aggregate.Aggregator{a, b}
			if d, ok := direct[name]; ok {
				c, err := d(spec)
				if err != nil {
					t.Fatal(err)
				}
				aggs = append(aggs, c)
			}
			var models [][]byte
			for _, g := range aggs {
				if err := g.Begin(1, m0); err != nil {
					t.Fatal(err)
				}
				for i, u := range ups {
					if err := g.Add(aggregate.Update{Peer: string(rune('a' + i)), Samples: 100, Payload: u}); err != nil {
						t.Fatalf("%s (%s): %v", name, codec, err)
					}
				}
				m, err := g.Finalize()
				if err != nil {
					t.Fatal(err)
				}
				models = append(models, m)
			}
			for i := range models {
				if !bytes.Equal(models[i], models[0]) {
					t.Fatalf("%s (%s): aggregator %d votes another model", name, codec, i)
				}
			}
			if bytes.Equal(models[0], m0) {
				t.Fatalf("%s (%s): the vote left the initial model unchanged", name, codec)
			}
		}
	}
}

// TestFRLLoRAStartsNearBase: the initial adapters (half of each factor's
// signed constants, small scale) leave the base's accuracy within a few
// points, and a round of training changes the model deterministically.
func TestFRLLoRAStartsNearBase(t *testing.T) {
	_, test, _ := loadMNIST(t)
	base := loadSmallBase(t)
	tk := frlLoRASmall(t, "")
	m0, _ := tk.InitialModel()
	ev, err := tk.Evaluate(m0)
	if err != nil {
		t.Fatal(err)
	}
	b := evalDense(t, base, test)
	if ev.Accuracy < b-0.05 || ev.Accuracy > b+0.05 {
		t.Fatalf("initial adapters: accuracy %.4f, base %.4f", ev.Accuracy, b)
	}
	u1, _ := tk.Train(Job{Client: 1, Round: 1, Model: m0, Seed: 3})
	u2, _ := tk.Train(Job{Client: 1, Round: 1, Model: m0, Seed: 3})
	if !bytes.Equal(u1, u2) {
		t.Fatal("the same job gave two uploads")
	}
}

package task

import (
	"errors"
	"fmt"
	"math"

	"github.com/fedrank/fedrank/model"
)

// FRLLoRAConfig configures rank-vote fine-tuning: federated rank learning on
// supermask adapters of a frozen base (model.MaskedLoRA). Peers train the
// scores of the adapters' frozen signed factors and upload, per factor, the
// ranking of its edges; the FRL aggregators vote on them.
type FRLLoRAConfig struct {
	Name string // task name, e.g. "frl-lora-mnist"
	// Seed seeds the factors' signed constants and initial scores (the
	// federation's seed, as FRL's frozen weights).
	Seed uint64
	// Rank is the adapters' rank, per layer capped at min(in, out).
	Rank int
	// Alpha sets the scale alpha/rank of every layer; 0 means DefaultAdapterAlpha·Rank.
	Alpha float64
	// Keep is the fraction of each factor's edges a mask keeps, in (0, 1].
	Keep  float64
	Hyper model.Hyper
	// LRDecay multiplies the learning rate once per round: lr·LRDecay^(round-1).
	LRDecay float64
	// Codec is the ranking codec (FRLConfig.Codec).
	Codec string
}

// DefaultAdapterAlpha is frl-lora-mnist's scale alpha/rank when Alpha is 0.
// With signed constants ±√(2/in) in A and ±√(2/r) in B and masks keeping a
// fraction k of each, an entry of ΔW has standard deviation about
// 2·s·k/√in whatever the rank: s = 0.5 and k = 0.5 start the adapters at
// about a third of the scale √(2/in) of a He-initialised weight.
const DefaultAdapterAlpha = 0.5

// DefaultFRLLoRA is frl-lora-mnist's setting: rank-64 adapters, scale
// alpha/r = 0.5, masks of half the edges, FRL's local training at a quarter
// of its learning rate (0.1), chosen on seed 4 (BENCHMARKS.md, "Rank-vote
// fine-tuning (issue 13)").
func DefaultFRLLoRA(seed uint64) FRLLoRAConfig {
	return FRLLoRAConfig{
		Name:    "frl-lora-mnist",
		Seed:    seed,
		Rank:    64,
		Keep:    0.5,
		Hyper:   model.Hyper{LR: 0.1, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true},
		LRDecay: 0.999,
		Codec:   DefaultRankingCodec,
	}
}

// NewFRLLoRA builds a rank-vote fine-tuning task on a base model. It is an
// *FRL: its rankings, codecs, update format, aggregators and attacks are
// FRL's, on a network of sizes model.AdapterChain (the adapters' factors);
// only local training and evaluation run the adapters on the base.
func NewFRLLoRA(cfg FRLLoRAConfig, base *Base, d Data) (*FRL, error) {
	if base == nil {
		return nil, errors.New("task: a base model is required")
	}
	if cfg.Rank < 1 || cfg.Rank > 1<<12 {
		return nil, fmt.Errorf("task: rank %d out of range 1..4096", cfg.Rank)
	}
	alpha := cfg.Alpha
	if alpha == 0 {
		alpha = DefaultAdapterAlpha * float64(cfg.Rank)
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("task: alpha %v must be > 0 and finite", cfg.Alpha)
	}
	sizes := base.Sizes
	L := len(sizes) - 1
	ranks, alphas := make([]int, L), make([]float64, L)
	for l := range L {
		ranks[l] = min(cfg.Rank, sizes[l], sizes[l+1])
		alphas[l] = alpha * float64(ranks[l]) / float64(cfg.Rank)
	}
	if !(cfg.Keep > 0 && cfg.Keep <= 1) {
		return nil, fmt.Errorf("task: keep fraction %v, want (0, 1]", cfg.Keep)
	}
	ad, err := model.NewMaskedLoRA(sizes, base.W, ranks, alphas, cfg.Seed, cfg.Keep)
	if err != nil {
		return nil, err
	}
	fc := FRLConfig{Name: cfg.Name, Sizes: ad.Mask.Sizes, Seed: cfg.Seed, Hyper: cfg.Hyper,
		LRDecay: cfg.LRDecay, Codec: cfg.Codec, Keep: cfg.Keep}
	return newFRL(fc, ad.Mask, ad, base, d)
}

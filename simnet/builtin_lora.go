package simnet

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/fedrank/fedrank/lowrank"
	"github.com/fedrank/fedrank/task"
)

// lora-mnist: fine-tune a base model pre-trained on MNIST digits 0-4 (about
// half of the test digits right) on all ten digits, federatedly, with
// low-rank adapters; fedavg fine-tunes the whole network from the same base
// on the same split, for comparison.
func init() {
	RegisterScenario(Scenario{
		Name:        "lora-mnist",
		Description: "LoRA fine-tuning on MNIST: a LeNet-300-100 pre-trained on digits 0-4 learns all ten with rank-4 adapters (int8 factors)",
		Defaults: Config{
			Peers: 100, PerRound: 10, Rounds: 60, Seed: 1,
			Partition: "dirichlet:0.5", Net: "ideal", Quorum: 1, RoundTimeoutMs: 600_000,
			Aggregator: task.MergeSVD,
			Rank:       4, Compression: "int8",
		},
		Aggregators: []string{task.MergeSVD, task.MergeAvg, task.MergeFFA, task.MergeMedian, task.MergeFedAvg},
		// Updates are factors (task.Factors), or weights with fedavg: the
		// task says which when it is built.
		Build: func(cfg Config) (task.Task, error) {
			rank, compression := loraSettings(cfg)
			return buildLoRA(cfg, rank, compression, edgeRanks(cfg, rank))
		},
		Hyper: func(cfg Config) Hyper {
			d := task.DefaultLoRA(0)
			if cfg.Aggregator == task.MergeFedAvg {
				return HyperOf(d.DenseHyper, d.LRDecay)
			}
			return HyperOf(d.Hyper, d.LRDecay)
		},
	})
}

// loraSettings returns the adapter rank and upload compression of a run.
func loraSettings(cfg Config) (rank int, compression string) {
	return cfg.Rank, cfg.Compression
}

// edgeRanks is the per-client rank of a run with edge peers at a lower
// rank (Config.EdgeRank), nil without.
func edgeRanks(cfg Config, rank int) func(int) int {
	if cfg.EdgeRank == 0 || cfg.EdgePeers == 0 {
		return nil
	}
	return func(c int) int {
		if isEdgePeer(cfg.Seed, cfg.EdgePeers, c) {
			return cfg.EdgeRank
		}
		return rank
	}
}

// loraInputs are the MNIST split and the pre-trained base of a low-rank
// scenario's run.
func loraInputs(cfg Config) (task.Data, *task.Base, error) {
	d, err := mnistData(cfg)
	if err != nil {
		return task.Data{}, nil, err
	}
	base, err := loraBase(cfg)
	return d, base, err
}

// checkAdapterRank checks a low-rank scenario's rank.
func checkAdapterRank(rank int) error {
	if rank < 1 || rank > 300 {
		return &ConfigError{Field: "rank", Msg: fmt.Sprintf("%d, must be in 1..300", rank)}
	}
	return nil
}

// buildLoRA builds the lora-mnist task for an effective config with the
// given rank and compression; ranks, optional, gives heterogeneous ranks.
func buildLoRA(cfg Config, rank int, compression string, ranks func(int) int) (*task.LoRA, error) {
	d, base, err := loraInputs(cfg)
	if err != nil {
		return nil, err
	}
	lc := task.DefaultLoRA(subSeed(cfg.Seed, seedModel))
	lc.Merge = cfg.Aggregator
	lc.Rank, lc.Compression, lc.Ranks = rank, compression, ranks
	if cfg.Aggregator == task.MergeFedAvg {
		ApplyHyper(cfg, &lc.DenseHyper, &lc.LRDecay)
	} else {
		ApplyHyper(cfg, &lc.Hyper, &lc.LRDecay)
	}
	if err := checkAdapterRank(rank); err != nil {
		return nil, err
	}
	if cfg.EdgeRank > rank {
		return nil, &ConfigError{Field: "edge_rank", Msg: fmt.Sprintf("%d, must be at most the federation's rank %d", cfg.EdgeRank, rank)}
	}
	if cfg.EdgeRank > 0 && cfg.Aggregator == task.MergeFedAvg {
		return nil, &ConfigError{Field: "edge_rank", Msg: "fedavg trains the whole network: no adapter rank"}
	}
	if _, err := lowrank.ParseCodec(compression); err != nil {
		return nil, &ConfigError{Field: "compression", Msg: err.Error()}
	}
	return task.NewLoRA(lc, base, d)
}

var (
	loraBaseMu    sync.Mutex
	loraBaseCache = map[string]*task.Base{}
)

// loraBase returns the base model of a run: LeNet-300-100 trained on the
// digits 0-4 from the run's seed (task.DefaultPretrain). It takes about 3 s,
// so it is kept per process and as a safetensors file in the user's cache
// directory (fedrank/lora-mnist), keyed by its settings; the file is checked
// on reading and rewritten if it does not match. The base is a function of
// the seed: a cached and a fresh one are the same bytes.
func loraBase(cfg Config) (*task.Base, error) {
	m, err := loadMNIST(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	pc := task.DefaultPretrain(subSeed(cfg.Seed, seedPretrain))
	key := fmt.Sprintf("%s/%d", cfg.DataDir, pc.Seed)
	loraBaseMu.Lock()
	defer loraBaseMu.Unlock()
	if b, ok := loraBaseCache[key]; ok {
		return b, nil
	}
	dir := ""
	if c, err := os.UserCacheDir(); err == nil && cfg.DataDir == "" {
		dir = filepath.Join(c, "fedrank", "lora-mnist")
	}
	b, err := task.CachedPretrain(dir, pc, m.train)
	if b == nil {
		return nil, err
	}
	// A cache that cannot be written costs 3 s next time, nothing more.
	loraBaseCache[key] = b
	return b, nil
}

// seedPretrain derives the base model's seed from a run's seed.
const seedPretrain uint64 = 0x10aa

// frl-lora-mnist: the same base and split as lora-mnist, fine-tuned by
// rank-vote: peers train the scores of supermask adapters (frozen signed
// factors, masks of their top-scored edges) and upload the ranking of each
// factor's edges; FRL's vote aggregators and ranking codecs, unchanged.
func init() {
	d := task.DefaultFRLLoRA(0)
	RegisterScenario(Scenario{
		Name:        "frl-lora-mnist",
		Description: fmt.Sprintf("rank-vote fine-tuning on MNIST: lora-mnist's base and split, peers vote on the edges of rank-%d supermask adapters", d.Rank),
		Defaults: Config{
			Peers: 100, PerRound: 10, Rounds: 60, Seed: 1,
			Partition: "dirichlet:0.5", Net: "ideal", Quorum: 1, RoundTimeoutMs: 600_000,
			Aggregator: "vote-clamp", RankingCodec: task.DefaultRankingCodec,
			Rank: d.Rank,
		},
		Aggregators: []string{"vote-clamp", "vote-robust", "vote", "vote-median"},
		Updates:     task.Rankings,
		Build: func(cfg Config) (task.Task, error) {
			return buildFRLLoRA(cfg, func(*task.FRLLoRAConfig) {})
		},
		Hyper: func(Config) Hyper { d := task.DefaultFRLLoRA(0); return HyperOf(d.Hyper, d.LRDecay) },
	})
}

// buildFRLLoRA builds the frl-lora-mnist task of an effective config; tune,
// applied last, may change the task's settings.
func buildFRLLoRA(cfg Config, tune func(*task.FRLLoRAConfig)) (*task.FRL, error) {
	if err := checkAdapterRank(cfg.Rank); err != nil {
		return nil, err
	}
	if cfg.EdgeRank != 0 {
		return nil, &ConfigError{Field: "edge_rank", Msg: "frl-lora-mnist peers all rank adapters of the federation's rank"}
	}
	d, base, err := loraInputs(cfg)
	if err != nil {
		return nil, err
	}
	fc := task.DefaultFRLLoRA(subSeed(cfg.Seed, seedModel))
	ApplyHyper(cfg, &fc.Hyper, &fc.LRDecay)
	fc.Rank, fc.Codec = cfg.Rank, cfg.RankingCodec
	tune(&fc)
	return task.NewFRLLoRA(fc, base, d)
}

package simnet

import (
	"fmt"
	"sync"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/task"
)

// The built-in scenarios: the FRL reference's MNIST experiment and its FedAvg
// baseline on the same network and split.
func init() {
	mnist := Config{
		Peers: 1000, PerRound: 25, Rounds: 30, Seed: 1,
		Partition: "dirichlet:1.0", Net: "ideal", Quorum: 1, RoundTimeoutMs: 600_000,
	}
	frl := mnist
	frl.Aggregator = "vote-clamp"
	frl.RankingCodec = task.DefaultRankingCodec
	RegisterScenario(Scenario{
		Name:        "frl-mnist",
		Description: "Federated Rank Learning on MNIST: LeNet-300-100 supermask (--model lenet: the reference's conv LeNet), peers vote on edge rankings",
		Defaults:    frl,
		Aggregators: []string{"vote-clamp", "vote-robust", "vote", "vote-median"},
		Updates:     task.Rankings,
		Build: func(cfg Config) (task.Task, error) {
			d, err := mnistData(cfg)
			if err != nil {
				return nil, err
			}
			fc := task.DefaultFRL(subSeed(cfg.Seed, seedModel))
			ApplyHyper(cfg, &fc.Hyper, &fc.LRDecay)
			fc.Codec = cfg.RankingCodec
			fc.Conv = mnistModel(cfg)
			return task.NewFRL(fc, d)
		},
		Models: mnistModels,
		Hyper:  func(Config) Hyper { d := task.DefaultFRL(0); return HyperOf(d.Hyper, d.LRDecay) },
	})
	fedavg := mnist
	fedavg.Aggregator = "fedavg"
	RegisterScenario(Scenario{
		Name:        "fedavg-mnist",
		Description: "FedAvg baseline on MNIST: the same LeNet-300-100 (or --model lenet) with trainable dense weights",
		Defaults:    fedavg,
		Aggregators: []string{"fedavg", "median", "trimmed-mean", "multi-krum"},
		Updates:     task.Weights,
		Build: func(cfg Config) (task.Task, error) {
			d, err := mnistData(cfg)
			if err != nil {
				return nil, err
			}
			dc := task.DefaultFedAvg(subSeed(cfg.Seed, seedModel))
			ApplyHyper(cfg, &dc.Hyper, &dc.LRDecay)
			dc.Conv = mnistModel(cfg)
			return task.NewDense(dc, d)
		},
		Models: mnistModels,
		Hyper:  func(Config) Hyper { d := task.DefaultFedAvg(0); return HyperOf(d.Hyper, d.LRDecay) },
	})
}

// The networks of the MNIST scenarios (Config.Model), the default first:
// the fully connected LeNet-300-100 and the reference's convolutional LeNet
// (model.LeNet).
var mnistModels = []string{"fc", "lenet"}

// mnistModel is the convolutional network cfg.Model names, nil for the
// fully connected default.
func mnistModel(cfg Config) *model.ConvArch {
	if cfg.Model == "lenet" {
		a := model.LeNet()
		return &a
	}
	return nil
}

// Sub-seeds derived from a run's seed, one per independent random choice.
const (
	seedModel uint64 = iota + 1
	seedPartition
)

// subSeed derives an independent seed: the stream-th value of the splitmix
// stream seeded with the run's seed.
func subSeed(seed, stream uint64) uint64 { return splitmix.Nth(seed, stream) }

type mnistInputs struct {
	train, test *model.Inputs
	labels      []uint8
	classes     int
}

var (
	mnistMu    sync.Mutex
	mnistCache = map[string]*mnistInputs{}
)

// loadMNIST loads and converts MNIST once per directory per process.
func loadMNIST(dir string) (*mnistInputs, error) {
	dir, err := data.MNISTDir(dir)
	if err != nil {
		return nil, &ConfigError{Field: "data_dir", Msg: err.Error()}
	}
	mnistMu.Lock()
	defer mnistMu.Unlock()
	if m, ok := mnistCache[dir]; ok {
		return m, nil
	}
	tr, te, err := data.LoadMNIST(dir)
	if err != nil {
		return nil, fmt.Errorf("loading MNIST from %s: %w", dir, err)
	}
	m := &mnistInputs{labels: tr.Labels, classes: tr.Classes}
	if m.train, err = model.NewInputs(tr, data.MNISTMean, data.MNISTStd); err != nil {
		return nil, err
	}
	if m.test, err = model.NewInputs(te, data.MNISTMean, data.MNISTStd); err != nil {
		return nil, err
	}
	mnistCache[dir] = m
	return m, nil
}

func mnistData(cfg Config) (task.Data, error) {
	m, err := loadMNIST(cfg.DataDir)
	if err != nil {
		return task.Data{}, err
	}
	spec, err := data.ParseSpec(cfg.Partition)
	if err != nil {
		return task.Data{}, &ConfigError{Field: "partition", Msg: err.Error()}
	}
	// With more peers than training examples, the data is split among as
	// many peers as there are examples; the others hold none (and are never
	// selected).
	clients := min(cfg.Peers, len(m.labels))
	parts, err := spec.Split(m.labels, m.classes, clients, subSeed(cfg.Seed, seedPartition))
	if err != nil {
		return task.Data{}, &ConfigError{Field: "partition", Msg: err.Error()}
	}
	if clients < cfg.Peers {
		parts = append(parts, make(data.Partition, cfg.Peers-clients)...)
	}
	return task.Data{Train: m.train, Test: m.test, Parts: parts}, nil
}

package genesis

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"

	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
)

// Seeds derived from Genesis.Seed, as the simulator derives them from its
// run's seed (simnet/builtin.go, simnet/builtin_lora.go, simnet/rand.go), so
// that a genesis of seed S and `node sim --seed S` agree.
const (
	// modelStream: the model seed is splitmix.Nth(S, modelStream)
	// (simnet's subSeed(S, seedModel)).
	modelStream uint64 = 1
	// pretrainStream: the simulator's lora-mnist (and frl-lora-mnist) base
	// model is pre-trained with seed splitmix.Nth(S, pretrainStream)
	// (simnet's seedPretrain).
	pretrainStream uint64 = 0x10aa
	// selectStream: trainer selection is seeded with
	// splitmix.Derive(S, selectStream) (simnet's streamSelect).
	selectStream uint64 = 0x6e6574 + 1<<32
)

// ModelSeed is the seed of the task's model (task.DefaultFRL and friends).
func (g *Genesis) ModelSeed() uint64 { return splitmix.Nth(g.Seed, modelStream) }

// PretrainSeed is the seed with which the simulator pre-trains the base model
// of its lora-mnist and frl-lora-mnist runs of seed g.Seed
// (task.DefaultPretrain(PretrainSeed()) on the MNIST training set): the base
// file to use to match the simulator.
func (g *Genesis) PretrainSeed() uint64 { return splitmix.Nth(g.Seed, pretrainStream) }

// SelectSeed seeds trainer selection (node.Config.Seed).
func (g *Genesis) SelectSeed() uint64 { return splitmix.Derive(g.Seed, selectStream) }

// NodeConfig returns the protocol machine's configuration for peer self: the
// aggregator if self is Aggregator, a trainer if it is a member, an error
// otherwise (or if the genesis is invalid). The caller completes it with
// what the genesis does not hold: from BuildTask's task, NewAggregator (a
// closure over task.NewAggregator(g.AggregatorName)) and InitialModel (the
// task's InitialModel; the aggregator needs it, a trainer may take it to
// skip the download of round 1); and Sign/Verify from the peer's key.
func (g *Genesis) NodeConfig(self string) (node.Config, error) {
	if err := g.Validate(); err != nil {
		return node.Config{}, err
	}
	f := g.filled()
	var role node.Role
	switch {
	case self == f.Aggregator:
		role = node.RoleAggregator
	case slices.Contains(f.Members, self):
		role = node.RoleTrainer
	default:
		return node.Config{}, fmt.Errorf("genesis: peer %s is neither the aggregator nor a member of federation %q", self, f.Name)
	}
	return node.Config{
		ID:             self,
		Federation:     f.ID(),
		Role:           role,
		Aggregator:     f.Aggregator,
		Members:        slices.Sorted(slices.Values(f.Members)),
		PerRound:       f.PerRound,
		Quorum:         f.Quorum,
		MinUpdates:     f.MinUpdates,
		RoundTimeoutMs: ms(f.RoundTimeout),
		RetryMs:        ms(f.Retry),
		Rounds:         f.Rounds,
		Seed:           f.SelectSeed(),
		MaxUpdateBytes: int(f.MaxUpdateBytes),
		MaxModelBytes:  int(f.MaxModelBytes),
		ChunkBytes:     int(f.ChunkBytes),
		SilenceMs:      ms(f.SilenceTimeout),
	}, nil
}

// BuildTask builds the scenario's task with the genesis's hyperparameters on
// this peer's data: a trainer's training samples (one client holding them
// all, say) and test set if any, or for the aggregator task.Data{Test: ...}
// or task.Data{} (see task.Data). lora-mnist and frl-lora-mnist read the
// base model file (LoadBase). The task's InitialModel is the same bytes on every peer and
// equals the simulator's for the same scenario and seed.
func (g *Genesis) BuildTask(d task.Data) (task.Task, error) {
	return g.BuildLocalTask(d, Local{})
}

// Local are a member's own training settings, from its node configuration
// rather than the genesis: they change what it trains, never what the
// federation's model is.
type Local struct {
	// Rank, for lora-mnist members: train adapters of this rank (1 up to the
	// federation's task.rank; 0 = the federation's). A lower rank trains
	// and uploads the leading components of the global adapters (nested
	// ranks, as in DyLoRA and heterogeneous-rank FL); the merge takes mixed
	// ranks (lora-svd, lora-avg and lora-ffa average each component over
	// the updates that have it).
	Rank int
}

// BuildLocalTask is BuildTask for a member with its own training settings.
// The task's InitialModel and aggregator are those of BuildTask.
func (g *Genesis) BuildLocalTask(d task.Data, l Local) (task.Task, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	f := g.filled()
	p := &f.Task
	if l.Rank != 0 && f.Scenario == "frl-lora-mnist" {
		return nil, fmt.Errorf("train.rank %d: the members of a frl-lora-mnist federation all rank the edges of the federation's rank-%d adapters (task.rank): "+
			"a ranking of adapters of another rank cannot be voted with theirs; leave train.rank at 0", l.Rank, p.Rank)
	}
	if l.Rank != 0 && (f.Scenario != "lora-mnist" || f.AggregatorName == task.MergeFedAvg) {
		return nil, fmt.Errorf("train.rank %d: a local adapter rank is for lora-mnist federations with adapters (this one runs %s with %s)", l.Rank, f.Scenario, f.AggregatorName)
	}
	seed := f.ModelSeed()
	switch f.Scenario {
	case "frl-lora-mnist":
		base, err := f.LoadBase()
		if err != nil {
			return nil, err
		}
		c := task.DefaultFRLLoRA(seed)
		c.Hyper, c.LRDecay, c.Rank, c.Codec = p.hyper(), p.LRDecay, p.Rank, p.RankingCodec
		return task.NewFRLLoRA(c, base, d)
	case "frl-mnist":
		c := task.DefaultFRL(seed)
		c.Hyper, c.LRDecay, c.Codec = p.hyper(), p.LRDecay, p.RankingCodec
		return task.NewFRL(c, d)
	case "fedavg-mnist":
		c := task.DefaultFedAvg(seed)
		c.Hyper, c.LRDecay = p.hyper(), p.LRDecay
		return task.NewDense(c, d)
	case "lora-mnist":
		base, err := f.LoadBase()
		if err != nil {
			return nil, err
		}
		c := task.DefaultLoRA(seed)
		c.Merge, c.Rank, c.Compression, c.LRDecay = f.AggregatorName, p.Rank, p.Compression, p.LRDecay
		if l.Rank != 0 {
			if l.Rank < 1 || l.Rank > p.Rank {
				return nil, fmt.Errorf("train.rank %d: want 1..%d, the federation's task.rank", l.Rank, p.Rank)
			}
			c.Ranks = func(int) int { return l.Rank }
		}
		if f.AggregatorName == task.MergeFedAvg {
			c.DenseHyper = p.hyper()
		} else {
			c.Hyper = p.hyper()
		}
		return task.NewLoRA(c, base, d)
	}
	return nil, fieldErr("scenario", "unknown scenario %q", f.Scenario)
}

// LoadBase reads the base model of lora-mnist or frl-lora-mnist
// (BaseModelPath), checks its SHA-256 against Task.BaseModelHash and
// decodes it (task.DecodeBase).
func (g *Genesis) LoadBase() (*task.Base, error) {
	path := g.BaseModelPath()
	if path == "" {
		return nil, fieldErr("task.base_model", "empty")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fieldErr("task.base_model", "%v", err)
	}
	sum := sha256.Sum256(b)
	if got, want := hex.EncodeToString(sum[:]), g.filled().Task.BaseModelHash; got != want {
		return nil, fieldErr("task.base_model_hash", "%s has SHA-256 %s, the genesis says %s", path, got, want)
	}
	base, err := task.DecodeBase(b)
	if err != nil {
		return nil, fieldErr("task.base_model", "%s: %v", path, err)
	}
	return base, nil
}

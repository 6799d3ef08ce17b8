package simnet

import "fmt"

// Config is every setting of a simulated run. Zero values mean "the scenario's
// default"; Run fills them in and reports the effective config in Report.Config.
type Config struct {
	Scenario   string  `json:"scenario"`
	Peers      int     `json:"peers"`
	PerRound   int     `json:"per_round"`
	Rounds     int     `json:"rounds"`
	Seed       uint64  `json:"seed"`
	Partition  string  `json:"partition"`  // "iid", "dirichlet:ALPHA", "shards:K"
	Aggregator string  `json:"aggregator"` // "" = the scenario's default
	Attackers  float64 `json:"attackers"`  // fraction of peers that attack, [0, 0.5)
	Attack     string  `json:"attack"`
	Net        string  `json:"net"`   // "ideal", "lan", "wan", "lossy"
	Crash      float64 `json:"crash"` // per-round probability that a selected trainer crashes
	// Quorum is the fraction of the selected peers whose updates close a round
	// early; the round otherwise closes at its deadline.
	Quorum float64 `json:"quorum"`
	// RoundTimeoutMs is the round deadline in simulated milliseconds.
	RoundTimeoutMs int64 `json:"round_timeout_ms"`
	// DataDir holds the MNIST IDX files; "" finds the copy shipped by the Go module.
	DataDir string `json:"data_dir"`
	// Rank is the adapter rank of low-rank (LoRA) scenarios; 0 = the scenario's.
	Rank int `json:"rank"`
	// Compression is the upload codec of low-rank scenarios: "fp32", "fp16"
	// or "int8" (with a scale per component); "" = the scenario's.
	Compression string `json:"compression"`
	// Workers is the number of goroutines that run local training and
	// evaluation, and that the aggregator's Finalize uses when it can
	// (aggregate.Parallel; 0 = GOMAXPROCS). It changes wall time, never
	// results.
	Workers int `json:"workers"`

	// Faults (faults.go). All are drawn from the run's seed: the same seed
	// and settings give the same faults, at the same virtual times.

	// PartitionNet cuts peers off from the aggregator on a schedule of
	// rounds: windows "ROUNDS:WHO" separated by ';', ROUNDS a round "7" or
	// a range "10-20" (inclusive), WHO a fraction of all peers ("0.3" or
	// "30%", drawn from the seed) or a list of peers ("peer-0003,peer-0011"
	// or their indices "3,11"). "" = no partition.
	PartitionNet string `json:"partition_net"`
	// Stragglers gives each peer a compute speed: "lognormal:SIGMA" (the
	// training time of every peer is multiplied by exp(SIGMA·Z), Z standard
	// normal) or "slow:FRACxFACTOR" (each peer is, with probability FRAC,
	// FACTOR times slower). "" = every peer at nominal speed.
	Stragglers string `json:"stragglers"`
	// Churn is the probability that a peer is away in a round: it leaves
	// when the round opens (losing what it held in memory), misses
	// everything sent to it, and comes back, empty, when a round opens
	// without it away. Drawn per peer and round. 0 = nobody leaves.
	Churn float64 `json:"churn"`
	// CrashAggregator is the probability that the aggregator crashes in a
	// round, and CrashAggregatorAt lists rounds where it does ("3,7"): it
	// crashes right after persisting the round's k-th accepted update (k =
	// half the quorum, at least 1), before it acknowledges it, and restarts
	// AggregatorDownMs later from its store (node.Recover, node.Restore).
	CrashAggregator   float64 `json:"crash_aggregator"`
	CrashAggregatorAt string  `json:"crash_aggregator_at"`

	// Edge peers: EdgePeers is the fraction of peers that are small boards
	// (each peer is one with that probability, drawn from the seed); their
	// uplink is EdgeUplinkMbit Mbit/s (0 = the network profile's) and, in
	// low-rank scenarios, they train and send adapters of rank EdgeRank
	// (1..rank; 0 = the federation's): nested ranks, merged with the
	// others' (lora-svd, lora-avg and lora-ffa take mixed ranks). Reports
	// count their updates per round (edge_selected, edge_accepted).
	EdgePeers      float64 `json:"edge_peers,omitempty"`
	EdgeRank       int     `json:"edge_rank,omitempty"`
	EdgeUplinkMbit float64 `json:"edge_uplink_mbit,omitempty"`
	// AggregatorDownMs is how long a crashed aggregator stays down, in
	// simulated milliseconds (0 = 5 s).
	AggregatorDownMs int64 `json:"aggregator_down_ms"`

	// Local training, as the scenario's task runs it: zero values are the
	// scenario's; a scenario without local SGD (a custom task) leaves them
	// zero and accepts no other value.

	// LR is the learning rate of the first local epoch of round 1.
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum"`
	WeightDecay float64 `json:"weight_decay"`
	// Epochs is the local epochs per round; it also scales a peer's
	// virtual training time.
	Epochs int `json:"epochs"`
	Batch  int `json:"batch"`
	// LRSchedule is "cosine" (annealed over the local epochs) or "constant".
	LRSchedule string `json:"lr_schedule"`
	// LRDecay multiplies the learning rate once per round: lr·decay^(round-1).
	LRDecay float64 `json:"lr_decay"`
	// RankingCodec is how peers send rankings: "packed" (ceil(log2 n) bits
	// per edge), "delta" (lossless, coded against the global model the
	// peer trained from: the same models from fewer bytes), "bucket:B" or
	// "bucket-mask:B" (lossy: each edge's bucket, coded against the global
	// model; see task.ParseRankingCodec), counted in bytes_up as sent.
	// "" = the scenario's default: frl-mnist's is task.DefaultRankingCodec
	// (bucket-mask:16), a scenario without one sends packed rankings.
	// Ranking scenarios only.
	RankingCodec string `json:"ranking_codec,omitempty"`
	// Model is the network of scenarios that offer a choice (Scenario.Models):
	// "" or "fc", the fully connected default (LeNet-300-100), or "lenet",
	// the reference's MNIST LeNet (two 3×3 convolutions, a 2×2 max-pool,
	// two fully connected layers). "fc" is reported as "", so that the
	// configs (and sweep cells) of existing runs are unchanged.
	Model string `json:"model,omitempty"`
	// AggregatorParams describes the aggregator's own parameters (its trim
	// fraction, Multi-Krum's f and m, vote-robust's outlier threshold):
	// filled in by Resolve from the scenario, for the report. It cannot be
	// set; a value other than the effective one is a *ConfigError.
	AggregatorParams string `json:"aggregator_params"`
}

// Default fault settings.
const (
	// DefaultAggregatorDownMs is how long a crashed aggregator stays down.
	DefaultAggregatorDownMs = 5_000
)

// Hyper is the local-training part of a Config, as a scenario gives its
// defaults (Scenario.Hyper).
type Hyper struct {
	LR, Momentum, WeightDecay float64
	Epochs, Batch             int
	LRSchedule                string // "cosine" or "constant"
	LRDecay                   float64
}

// hyper returns c's local-training settings.
func (c Config) hyper() Hyper {
	return Hyper{LR: c.LR, Momentum: c.Momentum, WeightDecay: c.WeightDecay, Epochs: c.Epochs, Batch: c.Batch,
		LRSchedule: c.LRSchedule, LRDecay: c.LRDecay}
}

// ConfigError names the setting that is wrong. The CLI maps it to exit code 2.
type ConfigError struct {
	Field string // the flag / JSON name, e.g. "per_round"
	Msg   string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Msg) }

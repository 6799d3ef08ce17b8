package simnet

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/rankvote"
	"github.com/fedrank/fedrank/task"
)

// Run resolves cfg's scenario, fills every unset setting from the scenario's
// defaults, validates the result and simulates it. Errors in the settings are
// *ConfigError values naming the setting.
func Run(ctx context.Context, cfg Config, obs Observer) (*Report, error) {
	cfg, sc, err := Resolve(cfg)
	if err != nil {
		return nil, err
	}
	t, err := sc.Build(cfg)
	if err != nil {
		return nil, err
	}
	return Simulate(ctx, cfg, t, obs)
}

// Resolve returns the effective config of a run (defaults filled, validated)
// and its scenario, without building anything.
func Resolve(cfg Config) (Config, Scenario, error) {
	if cfg.Scenario == "" {
		cfg.Scenario = DefaultScenario
	}
	sc, ok := LookupScenario(cfg.Scenario)
	if !ok {
		names := []string{}
		for _, s := range Scenarios() {
			names = append(names, s.Name)
		}
		return cfg, sc, &ConfigError{Field: "scenario", Msg: fmt.Sprintf("unknown scenario %q (have: %s)", cfg.Scenario, strings.Join(names, ", "))}
	}
	cfg = withDefaults(cfg, sc.Defaults)
	var err error
	if cfg, err = withHyper(cfg, sc); err != nil {
		return cfg, sc, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, sc, err
	}
	if !slices.Contains(sc.Aggregators, cfg.Aggregator) {
		return cfg, sc, &ConfigError{Field: "aggregator", Msg: fmt.Sprintf("scenario %s has no aggregator %q (have: %s)", sc.Name, cfg.Aggregator, strings.Join(sc.Aggregators, ", "))}
	}
	if _, err := data.ParseSpec(cfg.Partition); err != nil {
		return cfg, sc, &ConfigError{Field: "partition", Msg: err.Error()}
	}
	if sc.Defaults.Rank == 0 && cfg.Rank != 0 {
		return cfg, sc, &ConfigError{Field: "rank", Msg: fmt.Sprintf("scenario %s trains no low-rank adapters", sc.Name)}
	}
	if sc.Defaults.Rank == 0 && cfg.EdgeRank != 0 {
		return cfg, sc, &ConfigError{Field: "edge_rank", Msg: fmt.Sprintf("scenario %s trains no low-rank adapters", sc.Name)}
	}
	if sc.Defaults.Compression == "" && cfg.Compression != "" {
		return cfg, sc, &ConfigError{Field: "compression", Msg: fmt.Sprintf("scenario %s uploads no low-rank factors", sc.Name)}
	}
	if err := checkAttack(cfg, sc.Updates); err != nil {
		return cfg, sc, err
	}
	if cfg.Model != "" {
		if !slices.Contains(sc.Models, cfg.Model) {
			if len(sc.Models) == 0 {
				return cfg, sc, &ConfigError{Field: "model", Msg: fmt.Sprintf("scenario %s offers no choice of model", sc.Name)}
			}
			return cfg, sc, &ConfigError{Field: "model", Msg: fmt.Sprintf("scenario %s has no model %q (have: %s)", sc.Name, cfg.Model, strings.Join(sc.Models, ", "))}
		}
		if cfg.Model == sc.Models[0] {
			cfg.Model = "" // the default is reported as unset (Config.Model)
		}
	}
	return cfg, sc, nil
}

// withDefaults fills cfg's zero fields from d. A zero seed means the
// scenario's default seed.
func withDefaults(cfg, d Config) Config {
	if cfg.Peers == 0 {
		cfg.Peers = d.Peers
	}
	if cfg.PerRound == 0 {
		cfg.PerRound = min(d.PerRound, cfg.Peers)
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = d.Rounds
	}
	if cfg.Seed == 0 {
		cfg.Seed = d.Seed
	}
	if cfg.Partition == "" {
		cfg.Partition = d.Partition
	}
	if cfg.Aggregator == "" {
		cfg.Aggregator = d.Aggregator
	}
	if cfg.Attack == "" {
		cfg.Attack = d.Attack
	}
	if cfg.Net == "" {
		cfg.Net = d.Net
	}
	if cfg.Quorum == 0 {
		cfg.Quorum = d.Quorum
	}
	if cfg.RoundTimeoutMs == 0 {
		cfg.RoundTimeoutMs = d.RoundTimeoutMs
	}
	if cfg.Rank == 0 {
		cfg.Rank = d.Rank
	}
	if cfg.Compression == "" {
		cfg.Compression = d.Compression
	}
	if cfg.RankingCodec == "" {
		cfg.RankingCodec = d.RankingCodec
	}
	if cfg.AggregatorDownMs == 0 {
		cfg.AggregatorDownMs = cmp.Or(d.AggregatorDownMs, DefaultAggregatorDownMs)
	}
	return cfg
}

// withHyper fills cfg's local-training settings from the scenario's and its
// aggregator's parameters (Config.AggregatorParams).
func withHyper(cfg Config, sc Scenario) (Config, error) {
	params := aggregatorParams(cfg.Aggregator)
	if cfg.AggregatorParams != "" && cfg.AggregatorParams != params {
		return cfg, &ConfigError{Field: "aggregator_params", Msg: fmt.Sprintf("%q: reported, not set (aggregator %s: %q)", cfg.AggregatorParams, cfg.Aggregator, params)}
	}
	cfg.AggregatorParams = params
	if cfg.RankingCodec != "" && sc.Updates != task.Rankings {
		return cfg, &ConfigError{Field: "ranking_codec", Msg: fmt.Sprintf("scenario %s does not send rankings", sc.Name)}
	}
	if sc.Updates == task.Rankings {
		cfg.RankingCodec = cmp.Or(cfg.RankingCodec, task.CodecPacked) // effective, for the report
	}
	if sc.Hyper == nil {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"lr", cfg.LR != 0}, {"momentum", cfg.Momentum != 0}, {"weight_decay", cfg.WeightDecay != 0},
			{"epochs", cfg.Epochs != 0}, {"batch", cfg.Batch != 0}, {"lr_schedule", cfg.LRSchedule != ""}, {"lr_decay", cfg.LRDecay != 0},
		} {
			if f.set {
				return cfg, &ConfigError{Field: f.name, Msg: fmt.Sprintf("scenario %s has no local-training settings", sc.Name)}
			}
		}
		return cfg, nil
	}
	d := sc.Hyper(cfg)
	cfg.LR = cmp.Or(cfg.LR, d.LR)
	cfg.Momentum = cmp.Or(cfg.Momentum, d.Momentum)
	cfg.WeightDecay = cmp.Or(cfg.WeightDecay, d.WeightDecay)
	cfg.Epochs = cmp.Or(cfg.Epochs, d.Epochs)
	cfg.Batch = cmp.Or(cfg.Batch, d.Batch)
	cfg.LRSchedule = cmp.Or(cfg.LRSchedule, d.LRSchedule)
	cfg.LRDecay = cmp.Or(cfg.LRDecay, d.LRDecay)
	return cfg, nil
}

// HyperOf is the Hyper of the FRL, dense and LoRA tasks' settings: what
// Scenario.Hyper returns for them.
func HyperOf(h model.Hyper, lrDecay float64) Hyper {
	sched := "constant"
	if h.Cosine {
		sched = "cosine"
	}
	return Hyper{LR: h.LR, Momentum: h.Momentum, WeightDecay: h.WeightDecay, Epochs: h.Epochs, Batch: h.Batch,
		LRSchedule: sched, LRDecay: lrDecay}
}

// ApplyHyper sets cfg's local-training settings on a task's (the inverse of
// HyperOf). Zero settings leave the task's as they are, so that a config
// that Resolve did not fill builds the scenario's defaults.
func ApplyHyper(cfg Config, h *model.Hyper, lrDecay *float64) {
	h.LR = cmp.Or(cfg.LR, h.LR)
	h.Momentum = cmp.Or(cfg.Momentum, h.Momentum)
	h.WeightDecay = cmp.Or(cfg.WeightDecay, h.WeightDecay)
	h.Epochs = cmp.Or(cfg.Epochs, h.Epochs)
	h.Batch = cmp.Or(cfg.Batch, h.Batch)
	if cfg.LRSchedule != "" {
		h.Cosine = cfg.LRSchedule == "cosine"
	}
	*lrDecay = cmp.Or(cfg.LRDecay, *lrDecay)
}

// aggregatorParams describes the parameters the tasks build an aggregator
// with (see the task package's registries), for Config.AggregatorParams.
func aggregatorParams(name string) string {
	switch name {
	case "vote":
		return "borda count of every accepted ranking"
	case "vote-robust":
		return fmt.Sprintf("borda count of the rankings whose distance to the median-position consensus is at most median + hampel_k x MAD; hampel_k=%.4g", rankvote.HampelK)
	case "vote-median":
		return "edges ordered by their median position; trim_fraction=0.5"
	case "vote-clamp":
		return fmt.Sprintf("vote-robust's filter (hampel_k=%.4g), then a borda count of the kept rankings with every position clamped to within c of the edge's median position; c = alpha x the median kept voter's mean distance from the median positions, alpha=%g", rankvote.HampelK, rankvote.DefaultClampAlpha)
	case "fedavg":
		return "average weighted by sample counts"
	case "median":
		return "coordinate-wise median"
	case "trimmed-mean":
		return fmt.Sprintf("coordinate-wise mean without the lowest and highest values; trim_fraction=%g per end", task.DefaultTrimFraction)
	case "multi-krum":
		return "average of the m updates with the lowest Krum scores; f=(k-3)/2 (k = accepted updates), m=k-f, weight 1 each"
	case task.MergeSVD:
		return fmt.Sprintf("exact merge: sum of p_k·B_k·A_k (p_k by sample counts), truncated back to the rank by SVD; method=%v", task.DefaultLoRA(0).SVD.Method)
	case task.MergeAvg:
		return "factor averaging (FedIT): mean of B and mean of A, weighted by sample counts"
	case task.MergeFFA:
		return "frozen A from a shared seed (FFA-LoRA): mean of B weighted by sample counts"
	case task.MergeMedian:
		return "robust merge: coordinate-wise median of the products B_k·A_k (unweighted), truncated back to the rank by SVD (randomized when rank+10 <= min(in, out)/4, else dense)"
	}
	return ""
}

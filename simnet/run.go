package simnet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fedrank/fedrank/data"
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
	if sc.Defaults.Compression == "" && cfg.Compression != "" {
		return cfg, sc, &ConfigError{Field: "compression", Msg: fmt.Sprintf("scenario %s uploads no low-rank factors", sc.Name)}
	}
	if err := checkAttack(cfg, sc.Updates); err != nil {
		return cfg, sc, err
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
	return cfg
}

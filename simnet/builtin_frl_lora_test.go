package simnet

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/task"
)

// TestFRLLoRAMNISTSettings: frl-lora-mnist has lora-mnist's federation
// (100 peers, 10 a round, Dirichlet 0.5) and FRL's aggregators and default
// ranking codec; it takes --rank, the ranking codecs and the ranking
// attacks, and refuses factor compression.
func TestFRLLoRAMNISTSettings(t *testing.T) {
	cfg, sc, err := Resolve(Config{Scenario: "frl-lora-mnist"})
	if err != nil {
		t.Fatal(err)
	}
	lora, _, _ := Resolve(Config{Scenario: "lora-mnist"})
	if cfg.Peers != lora.Peers || cfg.PerRound != lora.PerRound || cfg.Partition != lora.Partition || cfg.Rounds != lora.Rounds {
		t.Fatalf("federation %+v, lora-mnist's %+v", cfg, lora)
	}
	frl, _ := LookupScenario("frl-mnist")
	if cfg.Aggregator != "vote-clamp" || !slices.Equal(sc.Aggregators, frl.Aggregators) || sc.Updates != task.Rankings {
		t.Fatalf("aggregator %q of %v, updates %q", cfg.Aggregator, sc.Aggregators, sc.Updates)
	}
	if cfg.RankingCodec != task.DefaultRankingCodec || cfg.Rank != task.DefaultFRLLoRA(0).Rank {
		t.Fatalf("codec %q rank %d", cfg.RankingCodec, cfg.Rank)
	}
	for _, c := range []Config{
		{Scenario: "frl-lora-mnist", Rank: 4, RankingCodec: "delta", Aggregator: "vote"},
		{Scenario: "frl-lora-mnist", Attackers: 0.2, Attack: "reverse"},
		{Scenario: "frl-lora-mnist", Attackers: 0.2, Attack: "random"},
		{Scenario: "frl-lora-mnist", Attackers: 0.2, Attack: "labelflip"},
	} {
		if _, _, err := Resolve(c); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []Config{
		{Scenario: "frl-lora-mnist", Compression: "int8"},
		{Scenario: "frl-lora-mnist", Attackers: 0.2, Attack: "signflip"},
		{Scenario: "frl-lora-mnist", RankingCodec: "bucket:1"},
	} {
		if _, _, err := Resolve(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	cfg.Rank = 0
	if _, err := buildFRLLoRA(cfg, func(*task.FRLLoRAConfig) {}); err == nil || !strings.Contains(err.Error(), "rank") {
		t.Errorf("rank 0: %v", err)
	}
}

// TestFRLLoRAMNISTRuns: a short frl-lora-mnist run starts from about the
// base, lifts it, sends rankings of a few kilobytes, and replays bit for bit.
func TestFRLLoRAMNISTRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains a base and runs federated rounds; skipped with -short")
	}
	cfg := Config{Scenario: "frl-lora-mnist", PerRound: 5, Rounds: 3, Workers: 2}
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.InitialAccuracy < 0.45 || rep.InitialAccuracy > 0.55 {
		t.Fatalf("initial accuracy %v, want about the base's half", rep.InitialAccuracy)
	}
	if rep.FinalAccuracy < rep.InitialAccuracy+0.1 {
		t.Fatalf("accuracy %v -> %v after 3 rounds", rep.InitialAccuracy, rep.FinalAccuracy)
	}
	for _, r := range rep.Rounds {
		if r.Accepted != 5 {
			t.Fatalf("round %d accepted %d of 5", r.Round, r.Accepted)
		}
		if per := r.BytesUp / int64(r.Accepted); per > 50_000 {
			t.Fatalf("round %d: %d bytes up per peer", r.Round, per)
		}
	}
	if !strings.Contains(rep.Model.Name, "supermask adapters") {
		t.Fatalf("model %+v", rep.Model)
	}
	cfg.Rounds = 2
	a, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Model.Hash != rep.Rounds[1].ModelHash {
		t.Fatalf("same seed, different models: %s %s", a.Model.Hash, rep.Rounds[1].ModelHash)
	}
}

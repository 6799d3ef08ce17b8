package simnet

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLoRAMNISTImprovesOnBase: a short lora-mnist run (100 peers, 5 per
// round, 4 rounds) starts from the base (about half the digits right), lifts
// it clearly, uploads a few kilobytes per peer and round, and replays
// bit for bit.
func TestLoRAMNISTImprovesOnBase(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains a base and runs federated rounds; skipped with -short")
	}
	cfg := Config{Scenario: "lora-mnist", PerRound: 5, Rounds: 4, Workers: 2}
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.InitialAccuracy < 0.45 || rep.InitialAccuracy > 0.55 {
		t.Fatalf("base accuracy %v, want about half", rep.InitialAccuracy)
	}
	if rep.FinalAccuracy < rep.InitialAccuracy+0.2 {
		t.Fatalf("accuracy %v -> %v after 4 rounds", rep.InitialAccuracy, rep.FinalAccuracy)
	}
	for _, r := range rep.Rounds {
		if r.Accepted != 5 {
			t.Fatalf("round %d accepted %d of 5", r.Round, r.Accepted)
		}
		if per := r.BytesUp / int64(r.Accepted); per > 10_000 {
			t.Fatalf("round %d: %d bytes up per peer, want a few kilobytes", r.Round, per)
		}
	}
	if rep.Config.(Config).Aggregator != "lora-svd" || !strings.Contains(rep.Model.Name, "lora r=4") {
		t.Fatalf("config %+v model %+v", rep.Config, rep.Model)
	}
	cfg.Rounds = 2
	a, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Model.Hash != b.Model.Hash || a.Model.Hash != rep.Rounds[1].ModelHash {
		t.Fatalf("same seed, different models: %s %s %s", a.Model.Hash, b.Model.Hash, rep.Rounds[1].ModelHash)
	}
}

func TestLoRAMNISTSettings(t *testing.T) {
	cfg, _, err := Resolve(Config{Scenario: "lora-mnist"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Aggregator != "lora-svd" || cfg.Peers != 100 || cfg.PerRound != 10 {
		t.Fatalf("defaults %+v", cfg)
	}
	for _, agg := range []string{"lora-avg", "lora-ffa", "fedavg"} {
		if _, _, err := Resolve(Config{Scenario: "lora-mnist", Aggregator: agg}); err != nil {
			t.Errorf("%s: %v", agg, err)
		}
	}
	if _, err := buildLoRA(cfg, 0, "int8", nil); err == nil || !strings.Contains(err.Error(), "rank") {
		t.Errorf("rank 0: %v", err)
	}
	if _, err := buildLoRA(cfg, 4, "int4", nil); err == nil || !strings.Contains(err.Error(), "compression") {
		t.Errorf("int4: %v", err)
	}
}

// TestLoRATable produces the BENCHMARKS.md table: every merge × compression
// × rank on the default lora-mnist run, next to dense FedAvg fine-tuning of
// the whole network on the same split. About 25 minutes on 2 cores, so it
// runs only with FEDRANK_LORA_TABLE=1:
//
//	FEDRANK_LORA_TABLE=1 go test ./simnet -run TestLoRATable -v -timeout 2h
//
// FEDRANK_LORA_ROUNDS overrides the number of rounds.
func TestLoRATable(t *testing.T) {
	if os.Getenv("FEDRANK_LORA_TABLE") == "" {
		t.Skip("set FEDRANK_LORA_TABLE=1 to produce the LoRA table")
	}
	base, _, err := Resolve(Config{Scenario: "lora-mnist"})
	if err != nil {
		t.Fatal(err)
	}
	if v := os.Getenv("FEDRANK_LORA_ROUNDS"); v != "" {
		fmt.Sscan(v, &base.Rounds)
	}
	type row struct {
		merge, codec string
		rank         int
	}
	var rows []row
	for _, m := range []string{"lora-svd", "lora-avg", "lora-ffa"} {
		for _, c := range []string{"fp32", "fp16", "int8"} {
			for _, r := range []int{1, 4, 16} {
				rows = append(rows, row{m, c, r})
			}
		}
	}
	rows = append(rows, row{"fedavg", "fp32", 0})
	var out strings.Builder
	fmt.Fprintf(&out, "| merge | compression | rank | final accuracy | best | upload bytes / peer / round | vs dense | wall s |\n")
	fmt.Fprintf(&out, "|---|---|---|---|---|---|---|---|\n")
	var denseBytes, baseAcc float64
	results := make([]string, len(rows))
	// Dense first, for the byte ratio.
	order := append([]int{len(rows) - 1}, func() []int {
		o := make([]int, len(rows)-1)
		for i := range o {
			o[i] = i
		}
		return o
	}()...)
	for _, i := range order {
		r := rows[i]
		cfg := base
		cfg.Aggregator = r.merge
		start := time.Now()
		tk, err := buildLoRA(cfg, max(r.rank, 1), r.codec, nil)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Simulate(context.Background(), cfg, tk, nil)
		if err != nil {
			t.Fatal(err)
		}
		var up, acc int64
		for _, rr := range rep.Rounds {
			up += rr.BytesUp
			acc += int64(rr.Accepted)
		}
		per := float64(up) / float64(max(acc, 1))
		if r.merge == "fedavg" {
			denseBytes, baseAcc = per, rep.InitialAccuracy
		}
		rank := fmt.Sprint(r.rank)
		if r.merge == "fedavg" {
			rank, r.codec = "dense", "fp32"
		}
		results[i] = fmt.Sprintf("| %s | %s | %s | %.4f | %.4f | %.0f | %.2f%% | %.0f |\n",
			r.merge, r.codec, rank, rep.FinalAccuracy, rep.BestAccuracy, per, 100*per/denseBytes, time.Since(start).Seconds())
		t.Logf("%s", strings.TrimSpace(results[i]))
	}
	for _, s := range results {
		out.WriteString(s)
	}
	fmt.Fprintf(&out, "\nbase accuracy %.4f; %d peers, %d per round, %d rounds, %s, seed %d\n",
		baseAcc, base.Peers, base.PerRound, base.Rounds, base.Partition, base.Seed)
	t.Logf("\n%s", out.String())
	if p := os.Getenv("FEDRANK_LORA_TABLE_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLoRAFactorAttacks: lora-mnist takes the attacks on factors (signflip,
// noise, labelflip) with every adapter merge, refuses the ranking attacks
// with the update kind in the error, replays an attacked run bit for bit,
// and the attack changes the model; lora-median and lora-avg drop nothing.
func TestLoRAFactorAttacks(t *testing.T) {
	if testing.Short() {
		t.Skip("pre-trains a base and runs federated rounds; skipped with -short")
	}
	for _, bad := range []string{"reverse", "adaptive", "minmax"} {
		_, _, err := Resolve(Config{Scenario: "lora-mnist", Attackers: 0.2, Attack: bad})
		if err == nil {
			_, err = Run(context.Background(), Config{Scenario: "lora-mnist", Rounds: 1, PerRound: 5, Attackers: 0.2, Attack: bad}, nil)
		}
		if err == nil || !strings.Contains(err.Error(), "factors") {
			t.Errorf("%s on lora-mnist: %v, want an error naming the update kind", bad, err)
		}
	}
	if _, _, err := Resolve(Config{Scenario: "frl-lora-mnist", Attackers: 0.2, Attack: "labelflip"}); err != nil {
		t.Errorf("labelflip on frl-lora-mnist: %v", err)
	}
	clean, err := Run(context.Background(), Config{Scenario: "lora-mnist", Aggregator: "lora-median", PerRound: 5, Rounds: 2, Workers: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ agg, attack string }{
		{"lora-median", "signflip"}, {"lora-svd", "noise"}, {"lora-avg", "labelflip"}, {"lora-ffa", "signflip"},
	} {
		t.Run(tc.agg+"-"+tc.attack, func(t *testing.T) {
			cfg := Config{Scenario: "lora-mnist", Aggregator: tc.agg, PerRound: 5, Rounds: 2, Workers: 2, Attackers: 0.2, Attack: tc.attack}
			a, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.Model.Hash != b.Model.Hash {
				t.Fatalf("same seed, different models: %s %s", a.Model.Hash, b.Model.Hash)
			}
			for _, r := range a.Rounds {
				if r.Accepted != 5 || r.Dropped != 0 || r.DroppedAttackers != 0 {
					t.Fatalf("round %d: accepted %d, dropped %d (%d attackers)", r.Round, r.Accepted, r.Dropped, r.DroppedAttackers)
				}
			}
			if tc.agg == "lora-median" && a.Model.Hash == clean.Model.Hash {
				t.Fatal("the attacked run ends on the clean run's model: no attacker was selected")
			}
		})
	}
}

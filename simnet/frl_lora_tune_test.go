package simnet

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/fedrank/fedrank/task"
)

// envF reads a float setting of the tuning screen from the environment.
func envF(k string, d float64) float64 {
	if v := os.Getenv(k); v != "" {
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	return d
}

// TestFRLLoRATune is the screen that chose frl-lora-mnist's defaults
// (BENCHMARKS.md, "Rank-vote fine-tuning (issue 13)"): one run with the
// settings of the environment (SEED, ROUNDS, RANK, LR, KEEP, ALPHA = the
// scale alpha/r, CODEC; unset: the scenario's), printing one line. Opt-in:
//
//	FEDRANK_FRL_LORA_TUNE=1 SEED=4 ROUNDS=30 RANK=16 ALPHA=0.5 LR=0.1 \
//	  go test ./simnet -run TestFRLLoRATune -v -timeout 1h
func TestFRLLoRATune(t *testing.T) {
	if os.Getenv("FEDRANK_FRL_LORA_TUNE") == "" {
		t.Skip("set FEDRANK_FRL_LORA_TUNE=1 to run the frl-lora-mnist tuning screen")
	}
	cfg := Config{Scenario: "frl-lora-mnist", Seed: uint64(envF("SEED", 4)), Rounds: int(envF("ROUNDS", 60)), Rank: int(envF("RANK", 16)),
		LR: envF("LR", 0), RankingCodec: os.Getenv("CODEC"), Workers: 1}
	cfg, _, err := Resolve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := buildFRLLoRA(cfg, func(c *task.FRLLoRAConfig) {
		c.Keep = envF("KEEP", c.Keep)
		c.Alpha = envF("ALPHA", 0) * float64(c.Rank) // 0: the default
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := Simulate(context.Background(), cfg, tk, nil)
	if err != nil {
		t.Fatal(err)
	}
	accs := ""
	for i, rr := range r.Rounds {
		if (i+1)%10 == 0 {
			accs += fmt.Sprintf(" %.4f", rr.Accuracy)
		}
	}
	fmt.Printf("TUNE seed=%d rank=%d keep=%v s=%v lr=%v final=%.4f best=%.4f bytes/upd=%.0f |%s\n", cfg.Seed, cfg.Rank, envF("KEEP", task.DefaultFRLLoRA(0).Keep), envF("ALPHA", task.DefaultAdapterAlpha), cfg.LR,
		r.FinalAccuracy, r.BestAccuracy, r.BytesUpPerUpdate, accs)
}

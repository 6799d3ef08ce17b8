package simnet

import (
	"context"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/task"
)

func skipUnderRace(t *testing.T) {
	if raceEnabled {
		t.Skip("MNIST-scale runs take minutes under the race detector; the fake-task tests cover the engine's concurrency")
	}
}

func runMNIST(t *testing.T, cfg Config) *Report {
	t.Helper()
	skipUnderRace(t)
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != cfg.Rounds {
		t.Fatalf("%d rounds reported, want %d", len(rep.Rounds), cfg.Rounds)
	}
	return rep
}

// TestFRLMNISTReplays: the same seed and flags give the same model hash and
// the same per-round numbers, whatever the number of workers; another seed
// gives another model.
func TestFRLMNISTReplays(t *testing.T) {
	base := Config{Scenario: "frl-mnist", Peers: 1000, PerRound: 5, Rounds: 2, Seed: 1}
	a := runMNIST(t, base)
	one := base
	one.Workers = 1
	b := runMNIST(t, one)
	if a.Model.Hash != b.Model.Hash {
		t.Fatalf("same seed, different hashes: %s vs %s", a.Model.Hash, b.Model.Hash)
	}
	for i := range a.Rounds {
		ra, rb := a.Rounds[i], b.Rounds[i]
		if ra.Accuracy != rb.Accuracy || ra.Loss != rb.Loss || ra.BytesUp != rb.BytesUp || ra.ModelHash != rb.ModelHash {
			t.Fatalf("round %d differs between replays: %+v vs %+v", i+1, ra, rb)
		}
	}
	other := base
	other.Seed = 2
	if c := runMNIST(t, other); c.Model.Hash == a.Model.Hash {
		t.Fatal("different seeds gave the same model hash")
	}
	if a.Rounds[1].Accuracy <= a.InitialAccuracy {
		t.Fatalf("two FRL rounds did not improve on the random supermask: %.4f -> %.4f", a.InitialAccuracy, a.Rounds[1].Accuracy)
	}
}

// TestFedAvgMNISTLearns runs the dense baseline briefly on the same split.
func TestFedAvgMNISTLearns(t *testing.T) {
	rep := runMNIST(t, Config{Scenario: "fedavg-mnist", Peers: 1000, PerRound: 25, Rounds: 3, Seed: 1})
	if rep.FinalAccuracy < rep.InitialAccuracy+0.3 {
		t.Fatalf("FedAvg: accuracy %.4f -> %.4f after 3 rounds, want a clear rise", rep.InitialAccuracy, rep.FinalAccuracy)
	}
	// 25 dense float32 uploads of 266,200 weights, plus headers.
	if perPeer := rep.Rounds[0].BytesUp / int64(rep.Rounds[0].Accepted); perPeer < 4*266200 {
		t.Fatalf("FedAvg upload %d bytes per peer, want >= %d", perPeer, 4*266200)
	}
}

// TestFRLMNISTReferenceSetting is the published experiment: 1000 peers,
// Dirichlet(1.0), 25 per round, 30 rounds, with the scenario's default
// ranking codec (bucket-mask:16, about a bit per edge). The reference
// implementation reaches 0.939; we require 0.93. About half a minute on 2
// cores.
func TestFRLMNISTReferenceSetting(t *testing.T) {
	if testing.Short() {
		t.Skip("30 rounds of the reference setting; skipped with -short")
	}
	rep := runMNIST(t, Config{Scenario: "frl-mnist", Peers: 1000, PerRound: 25, Rounds: 30, Partition: "dirichlet:1.0", Seed: 1})
	for _, r := range rep.Rounds {
		if r.Accepted != 25 || r.Rejected != 0 {
			t.Fatalf("round %d: %d accepted, %d rejected, want 25 and 0", r.Round, r.Accepted, r.Rejected)
		}
	}
	t.Logf("final accuracy %.4f, best %.4f, %.2f s/round, hash %s", rep.FinalAccuracy, rep.BestAccuracy, rep.WallSeconds/30, rep.Model.Hash)
	if rep.FinalAccuracy < 0.93 {
		t.Fatalf("final accuracy %.4f, want >= 0.93", rep.FinalAccuracy)
	}
	// Packed rankings would take 18+15+10 bits per edge of the three
	// layers, about 587 KB; bucket-mask:16 about a bit per edge, 33 KB,
	// more in round 1, where peers move farthest from the global ranking.
	if perPeer := rep.BytesUpTotal / int64(25*len(rep.Rounds)); perPeer > 266_200*11/80 {
		t.Fatalf("FRL upload %d bytes per peer, want <= %d (1.1 bits per edge)", perPeer, 266_200*11/80)
	}
}

// corrupting wraps the real FRL task: some clients upload a ranking with a
// duplicated index, some a truncated payload.
type corrupting struct {
	task.Task
	spec aggregate.Spec
}

func (c corrupting) Train(job task.Job) ([]byte, error) {
	p, err := c.Task.Train(job)
	if err != nil {
		return nil, err
	}
	switch job.Client % 4 {
	case 1: // a ranking that is not a permutation
		r, err := c.spec.DecodeFRLUpdate(p, nil)
		if err != nil {
			return nil, err
		}
		r[1][7] = r[1][8]
		return c.spec.EncodeFRLUpdate(nil, r), nil
	case 2: // a corrupt packed buffer
		return p[:len(p)-3], nil
	}
	return p, nil
}

// TestFRLMNISTRejectsInvalidRankings: invalid updates from real peers are
// rejected and counted, the round goes on with the valid ones, and the model
// still learns.
func TestFRLMNISTRejectsInvalidRankings(t *testing.T) {
	skipUnderRace(t)
	cfg, sc, err := Resolve(Config{Scenario: "frl-mnist", Peers: 1000, PerRound: 12, Rounds: 3, Seed: 3, Quorum: 0.5, RoundTimeoutMs: 60_000,
		RankingCodec: task.CodecPacked}) // corrupting edits packed rankings
	if err != nil {
		t.Fatal(err)
	}
	tk, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := tk.(interface{ Spec() aggregate.Spec }).Spec()
	rep, err := Simulate(context.Background(), cfg, corrupting{Task: tk, spec: spec}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for _, r := range rep.Rounds {
		rejected += r.Rejected
		if r.Accepted == 0 {
			t.Fatalf("round %d accepted nothing", r.Round)
		}
	}
	if rejected == 0 {
		t.Fatal("no invalid update was rejected")
	}
	if rep.FinalAccuracy <= rep.InitialAccuracy+0.2 {
		t.Fatalf("accuracy %.4f -> %.4f: the valid updates did not train the model", rep.InitialAccuracy, rep.FinalAccuracy)
	}
}

package simnet

import (
	"context"
	"testing"
)

// BenchmarkFRLMNISTRound measures the wall time of one round of the
// reference setting (1000 peers, Dirichlet 1.0, 25 per round): local
// training of 25 peers, ranking, packing, the vote, protocol and wire
// encoding, and evaluation on the 10,000 test images. Run with
// -benchtime=Nx for N rounds.
func BenchmarkFRLMNISTRound(b *testing.B) {
	benchmarkScenarioRound(b, "frl-mnist")
}

// BenchmarkFedAvgMNISTRound is the same for the dense FedAvg baseline.
func BenchmarkFedAvgMNISTRound(b *testing.B) {
	benchmarkScenarioRound(b, "fedavg-mnist")
}

func benchmarkScenarioRound(b *testing.B, scenario string) {
	cfg, sc, err := Resolve(Config{Scenario: scenario, Rounds: max(b.N, 1)})
	if err != nil {
		b.Fatal(err)
	}
	t, err := sc.Build(cfg) // loads MNIST, splits it, builds the network: not timed
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rep, err := Simulate(context.Background(), cfg, t, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(cfg.Rounds), "s/round")
	b.ReportMetric(rep.FinalAccuracy, "accuracy")
}

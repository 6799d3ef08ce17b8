package simnet

import (
	"context"
	"testing"
	"time"

	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/task"
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

// BenchmarkFRLMNISTCodecRounds measures the wall time per round of the
// reference setting with each ranking codec against packed rankings, in
// the same iteration: runs of codecRounds rounds (seed 1), packed and
// coded one after the other, the order alternating between iterations.
// "-serial" leaves every coded update to the aggregator's own decoding on
// the event loop (no aggregate.Predecoder), as before issue 10's third
// target. Metrics: s/round of the codec, and x_packed, its time over the
// packed run's. Run with -benchtime=1x (each iteration is 2 runs).
func BenchmarkFRLMNISTCodecRounds(b *testing.B) {
	const codecRounds = 6
	build := func(codec string) (Config, task.Task) {
		cfg, sc, err := Resolve(Config{Scenario: "frl-mnist", Rounds: codecRounds, Seed: 1, RankingCodec: codec})
		if err != nil {
			b.Fatal(err)
		}
		t, err := sc.Build(cfg)
		if err != nil {
			b.Fatal(err)
		}
		return cfg, t
	}
	pcfg, ptask := build(task.CodecPacked)
	run := func(cfg Config, t task.Task, serial bool) time.Duration {
		t0 := time.Now()
		if _, err := simulate(context.Background(), cfg, t, nil, simOptions{noPredecode: serial}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for _, c := range []struct {
		codec  string
		serial bool
	}{{task.CodecDelta, true}, {task.CodecDelta, false}, {"bucket-mask:16", true}, {"bucket-mask:16", false}} {
		name := c.codec
		if c.serial {
			name += "-serial"
		}
		cfg, t := build(c.codec)
		b.Run(name, func(b *testing.B) {
			var coded, packed time.Duration
			i := 0
			for b.Loop() {
				if i%2 == 0 {
					coded += run(cfg, t, c.serial)
					packed += run(pcfg, ptask, false)
				} else {
					packed += run(pcfg, ptask, false)
					coded += run(cfg, t, c.serial)
				}
				i++
			}
			b.ReportMetric(coded.Seconds()/float64(i*codecRounds), "s/round")
			b.ReportMetric(packed.Seconds()/float64(i*codecRounds), "s/round_packed")
			b.ReportMetric(float64(coded)/float64(packed), "x_packed")
		})
	}
}

// BenchmarkFRLMNISTRoundAggWorkers measures the wall time per round of the
// reference setting (seed 1, its default aggregator, 8-round runs) with the
// aggregator's Finalize on 1 goroutine and on GOMAXPROCS, training and
// evaluation on GOMAXPROCS in both: the two runs one after the other in
// each iteration, the order alternating. Metrics: s/round_agg1 and
// s/round, and x_agg1, the second's time over the first's. Run with
// -benchtime=Nx (each iteration is 2 runs).
func BenchmarkFRLMNISTRoundAggWorkers(b *testing.B) {
	times := abRounds(b, "1 aggregator worker", "GOMAXPROCS", func(cfg Config, t task.Task, i int) (*Report, error) {
		opts := simOptions{}
		if i == 0 {
			opts.aggWorkers = 1
		}
		return simulate(context.Background(), cfg, t, nil, opts)
	})
	b.ReportMetric(times[0], "s/round_agg1")
	b.ReportMetric(times[1], "s/round")
	b.ReportMetric(times[1]/times[0], "x_agg1")
	b.ReportMetric(0, "ns/op")
}

// abRounds runs the reference setting (seed 1, its defaults, 8-round runs)
// as variants 0 and 1 of run, one after the other in each iteration, the
// order alternating, checks that both end at the same model (named a and
// b in the failure), and returns each variant's wall seconds per round.
func abRounds(b *testing.B, a, bName string, run func(cfg Config, t task.Task, i int) (*Report, error)) [2]float64 {
	b.Helper()
	const rounds = 8
	cfg, sc, err := Resolve(Config{Scenario: "frl-mnist", Rounds: rounds, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	t, err := sc.Build(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var times [2]time.Duration
	var hashes [2]string
	one := func(i int) {
		t0 := time.Now()
		rep, err := run(cfg, t, i)
		if err != nil {
			b.Fatal(err)
		}
		times[i] += time.Since(t0)
		hashes[i] = rep.Model.Hash
	}
	b.ResetTimer()
	for i := range b.N {
		one(i % 2)
		one(1 - i%2)
	}
	if hashes[0] != hashes[1] {
		b.Fatalf("final model %s with %s, %s with %s", hashes[0], a, hashes[1], bName)
	}
	perRound := float64(b.N * rounds)
	return [2]float64{times[0].Seconds() / perRound, times[1].Seconds() / perRound}
}

// BenchmarkFRLMNISTRoundVector measures the wall time per round of the
// reference setting (seed 1, its defaults, 8-round runs) with the vector
// kernels and with the portable ones, in the same iterations, the order
// alternating, and checks that both end at the same model. Only the vector
// build (GOEXPERIMENT=simd, on an AVX-512 CPU) has both; elsewhere it
// skips. Metrics: s/round (vector), s/round_portable, x_portable.
func BenchmarkFRLMNISTRoundVector(b *testing.B) {
	if !model.SetVectorKernels(true) {
		b.Skip("no vector kernels in this build or on this CPU")
	}
	defer model.SetVectorKernels(true)
	times := abRounds(b, "the vector kernels", "the portable ones", func(cfg Config, t task.Task, i int) (*Report, error) {
		model.SetVectorKernels(i == 0)
		return Simulate(context.Background(), cfg, t, nil)
	})
	b.ReportMetric(times[0], "s/round")
	b.ReportMetric(times[1], "s/round_portable")
	b.ReportMetric(times[1]/times[0], "x_portable")
	b.ReportMetric(0, "ns/op")
}

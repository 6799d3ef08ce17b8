package simnet

import (
	"context"
	"testing"
	"time"

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

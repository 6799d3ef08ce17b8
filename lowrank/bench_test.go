package lowrank

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
)

// The merges at the size: 25 peers on the 784×300 layer of
// LeNet-300-100, rank 4 and 16, fp32 updates. One op is a whole round:
// Begin, 25 Adds (decode and validate each payload), Finalize (merge and
// encode). x-fedavg is the time over that of a plain FedAvg round of the
// same 25 peers on the dense 784×300 layer, measured in the same run.

const benchPeers = 25

func benchSpec(rank int, frozen bool) Spec {
	return Spec{Seed: 1, FrozenA: frozen, Layers: []Layer{{In: 784, Out: 300, Rank: rank, Alpha: float32(2 * rank)}}}
}

// benchFedAvg runs the baseline, a FedAvg round of benchPeers dense 784×300
// updates, and returns its ns/op.
func benchFedAvg(b *testing.B) float64 {
	spec := aggregate.Spec{Seed: 1, Sizes: []int{784, 300}}
	rng := rand.New(rand.NewPCG(1, 1))
	var ups [][]byte
	for range benchPeers {
		w := make([]float32, 784*300)
		for i := range w {
			w[i] = float32(rng.NormFloat64())
		}
		ups = append(ups, spec.EncodeDenseUpdate(nil, [][]float32{w}))
	}
	global := spec.EncodeDenseModel([][]float32{make([]float32, 784*300)})
	agg, _ := aggregate.NewFedAvg(spec)
	b.ResetTimer()
	for b.Loop() {
		agg.Begin(1, global)
		for k, u := range ups {
			if err := agg.Add(aggregate.Update{Peer: fmt.Sprint(k), Samples: 600, Payload: u}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := agg.Finalize(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ups[0])), "B/update")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

func BenchmarkMerge(b *testing.B) {
	var base float64 // ns/op of the FedAvg baseline, run first
	b.Run("fedavg-dense", func(b *testing.B) { base = benchFedAvg(b) })
	for _, rank := range []int{4, 16} {
		for _, tc := range []struct {
			name   string
			frozen bool
			make   func(Spec) (aggregate.Aggregator, error)
		}{
			{NameAvg, false, func(s Spec) (aggregate.Aggregator, error) { return NewAvg(s) }},
			{NameFFA, true, func(s Spec) (aggregate.Aggregator, error) { return NewFFA(s) }},
			{NameSVD + "-auto", false, func(s Spec) (aggregate.Aggregator, error) { return NewSVD(s, SVDOptions{}) }},
			{NameSVD + "-factored", false, func(s Spec) (aggregate.Aggregator, error) { return NewSVD(s, SVDOptions{Method: Factored}) }},
			{NameSVD + "-randomized", false, func(s Spec) (aggregate.Aggregator, error) { return NewSVD(s, SVDOptions{Method: Randomized}) }},
			{NameSVD + "-dense", false, func(s Spec) (aggregate.Aggregator, error) { return NewSVD(s, SVDOptions{Method: Dense}) }},
		} {
			b.Run(fmt.Sprintf("%s/r=%d", tc.name, rank), func(b *testing.B) {
				if tc.name == NameSVD+"-factored" && rank*benchPeers > 300 {
					b.Skip("Σr = rank·peers exceeds the layer's 300 outputs: the factored method does not apply")
				}
				s := benchSpec(rank, tc.frozen)
				rng := rand.New(rand.NewPCG(2, uint64(rank)))
				global := randFactors(s, []int{rank}, rng, 0.05)
				gb, err := s.EncodeModel(global, FP32)
				if err != nil {
					b.Fatal(err)
				}
				var ups [][]byte
				for range benchPeers {
					ups = append(ups, must(s.EncodeUpdate(nil, FP32, global, randFactors(s, []int{rank}, rng, 0.05))))
				}
				agg, err := tc.make(s)
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					if err := agg.Begin(1, gb); err != nil {
						b.Fatal(err)
					}
					for k, u := range ups {
						if err := agg.Add(aggregate.Update{Peer: fmt.Sprint(k), Samples: int64(500 + k), Payload: u}); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := agg.Finalize(); err != nil {
						b.Fatal(err)
					}
				}
				if base > 0 {
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-fedavg")
				}
				b.ReportMetric(float64(len(ups[0])), "B/update")
				if svd, ok := agg.(*SVD); ok {
					b.ReportMetric(svd.DroppedFraction(), "dropped")
				}
			})
		}
	}
}

// BenchmarkMedianFinalize sets lora-median's Finalize beside lora-svd's on
// the 784×300 layer of LeNet-300-100: 10 peers of rank 64 (the issue 13
// runs) and 25 of rank 16, fp32 updates. One op is one Finalize (the
// round's Adds run outside the timer); x-svd is lora-median's ns/op over
// lora-svd's of the same updates, measured in the same run.
func BenchmarkMedianFinalize(b *testing.B) {
	for _, size := range []struct{ peers, rank int }{{10, 64}, {25, 16}} {
		var svdNs float64
		for _, name := range []string{NameSVD, NameMedian} {
			b.Run(fmt.Sprintf("%s/peers=%d/r=%d", name, size.peers, size.rank), func(b *testing.B) {
				s := benchSpec(size.rank, false)
				rng := rand.New(rand.NewPCG(3, uint64(size.rank)))
				global := randFactors(s, []int{size.rank}, rng, 0.05)
				gb := must(s.EncodeModel(global, FP32))
				var ups [][]byte
				for range size.peers {
					ups = append(ups, must(s.EncodeUpdate(nil, FP32, global, randFactors(s, []int{size.rank}, rng, 0.05))))
				}
				var agg aggregate.Aggregator
				var err error
				if name == NameSVD {
					agg, err = NewSVD(s, SVDOptions{})
				} else {
					agg, err = NewMedian(s, SVDOptions{})
				}
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					b.StopTimer()
					if err := agg.Begin(1, gb); err != nil {
						b.Fatal(err)
					}
					for k, u := range ups {
						if err := agg.Add(aggregate.Update{Peer: fmt.Sprint(k), Samples: int64(500 + k), Payload: u}); err != nil {
							b.Fatal(err)
						}
					}
					b.StartTimer()
					if _, err := agg.Finalize(); err != nil {
						b.Fatal(err)
					}
				}
				ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
				if name == NameSVD {
					svdNs = ns
				} else if svdNs > 0 {
					b.ReportMetric(ns/svdNs, "x-svd")
				}
			})
		}
	}
}

package aggregate

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The MNIST network of the FRL reference: 266,200 edges or weights.
var benchSpec = Spec{Seed: 1, Sizes: []int{784, 300, 100, 10}}

// benchUpdates returns count distinct encoded updates of benchSpec: random
// permutations, or weights drawn like a trained model's (N(0, 0.05²)).
func benchUpdates(ranking bool, count int) []Update {
	rng := rand.New(rand.NewPCG(uint64(count), 7))
	us := make([]Update, count)
	for k := range us {
		var p []byte
		if ranking {
			order := make([][]uint32, 0, 3)
			for _, n := range benchSpec.Layers() {
				o := make([]uint32, n)
				for i := range o {
					o[i] = uint32(i)
				}
				rng.Shuffle(n, func(i, j int) { o[i], o[j] = o[j], o[i] })
				order = append(order, o)
			}
			p = benchSpec.EncodeFRLUpdate(nil, order)
		} else {
			w := make([][]float32, 0, 3)
			for _, n := range benchSpec.Layers() {
				l := make([]float32, n)
				for i := range l {
					l[i] = float32(0.05 * rng.NormFloat64())
				}
				w = append(w, l)
			}
			p = benchSpec.EncodeDenseUpdate(nil, w)
		}
		us[k] = Update{Peer: fmt.Sprintf("p%d", k), Samples: int64(20 + k%50), Payload: p}
	}
	return us
}

// round runs one full round: Begin, Add of every update, Finalize.
func round(b *testing.B, a Aggregator, global []byte, us []Update) {
	if err := a.Begin(1, global); err != nil {
		b.Fatal(err)
	}
	for _, u := range us {
		if err := a.Add(u); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := a.Finalize(); err != nil {
		b.Fatal(err)
	}
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkAggregators times one round of each aggregator (Begin, Add of
// every update, decoding and validation included, Finalize) with 25 and 100
// distinct updates of the 266,200-parameter MNIST network. Metrics:
//   - ms/round: the round's time;
//   - x_fedavg / x_vote: that time over the time of FedAvg (dense) or the
//     plain Borda vote (rankings) on the same updates, timed in the same
//     iterations (each first in every other one), so the ratio holds on a
//     loaded machine;
//   - MB_kept: the heap the aggregator holds after a round (measured: live
//     heap with the aggregator warm minus without it).
func BenchmarkAggregators(b *testing.B) {
	type entry struct {
		name    string
		ranking bool
		make    func() (Aggregator, error)
	}
	entries := []entry{
		{"vote", true, func() (Aggregator, error) { return NewVote(benchSpec) }},
		{"vote-robust", true, func() (Aggregator, error) { return NewFilteredVote(benchSpec) }},
		{"vote-median", true, func() (Aggregator, error) { return NewMedianVote(benchSpec) }},
		{"vote-clamp", true, func() (Aggregator, error) { return NewClampedVote(benchSpec, 0) }},
		{"fedavg", false, func() (Aggregator, error) { return NewFedAvg(benchSpec) }},
		{"median", false, func() (Aggregator, error) { return NewMedian(benchSpec) }},
		{"trimmed-mean", false, func() (Aggregator, error) { return NewTrimmedMean(benchSpec, 0.4) }},
		{"multi-krum", false, func() (Aggregator, error) { return NewMultiKrum(benchSpec, -1, 0) }},
	}
	frlGlobal, denseGlobal := benchGlobals()
	for _, count := range []int{25, 100} {
		updates := map[bool][]Update{true: benchUpdates(true, count), false: benchUpdates(false, count)}
		for _, e := range entries {
			b.Run(fmt.Sprintf("updates=%d/%s", count, e.name), func(b *testing.B) {
				us, global := updates[e.ranking], denseGlobal
				baseName, newBase := "x_fedavg", func() (Aggregator, error) { return NewFedAvg(benchSpec) }
				if e.ranking {
					global, baseName = frlGlobal, "x_vote"
					newBase = func() (Aggregator, error) { return NewVote(benchSpec) }
				}
				before := heapInUse()
				a, err := e.make()
				if err != nil {
					b.Fatal(err)
				}
				round(b, a, global, us) // warm: the aggregator's memory is allocated
				kept := heapInUse() - before
				base, _ := newBase()
				round(b, base, global, us)
				// The two alternate which goes first: the one after pays for
				// the other's garbage and cache traffic.
				var aggTime, baseTime time.Duration
				timed := func(a Aggregator) time.Duration {
					t0 := time.Now()
					round(b, a, global, us)
					return time.Since(t0)
				}
				b.ResetTimer()
				for i := range b.N {
					b.StopTimer()
					if i%2 == 1 {
						baseTime += timed(base)
					}
					b.StartTimer()
					aggTime += timed(a)
					b.StopTimer()
					if i%2 == 0 {
						baseTime += timed(base)
					}
					b.StartTimer()
				}
				b.ReportMetric(aggTime.Seconds()*1000/float64(b.N), "ms/round")
				b.ReportMetric(float64(aggTime)/float64(baseTime), baseName)
				b.ReportMetric(float64(kept)/1e6, "MB_kept")
				runtime.KeepAlive(a)
			})
		}
	}
}

// nearUpdates returns count encoded rankings of benchSpec that agree as
// trained FRL peers do: one random base ranking per layer, each update with
// 30% of its positions swapped with one at most 200 away.
func nearUpdates(count int) []Update {
	rng := rand.New(rand.NewPCG(uint64(count), 11))
	var base [][]uint32
	for _, n := range benchSpec.Layers() {
		o := make([]uint32, n)
		for i := range o {
			o[i] = uint32(i)
		}
		rng.Shuffle(n, func(i, j int) { o[i], o[j] = o[j], o[i] })
		base = append(base, o)
	}
	us := make([]Update, count)
	for k := range us {
		order := make([][]uint32, len(base))
		for l, b := range base {
			r := append([]uint32(nil), b...)
			for range len(r) * 3 / 10 {
				i := rng.IntN(len(r))
				j := min(max(i+rng.IntN(401)-200, 0), len(r)-1)
				r[i], r[j] = r[j], r[i]
			}
			order[l] = r
		}
		us[k] = Update{Peer: fmt.Sprintf("p%d", k), Samples: 60, Payload: benchSpec.EncodeFRLUpdate(nil, order)}
	}
	return us
}

// BenchmarkFinalizeWorkers times Finalize alone (Begin and Add untimed) of
// the aggregators that implement Parallel, with 25 updates of the MNIST
// network, at 1 and 2 workers in the same iterations (alternating which
// goes first). Inputs: "near", rankings that agree as trained peers' do, and
// "random", independent random permutations. Metrics: ms_w1 and ms_w2, the
// Finalize times, and x_w2, ms_w2 over ms_w1 (below 1: faster); cpu_ms_w1
// and cpu_ms_w2, the CPU time of the process during them (all goroutines,
// and the garbage collector's: the work done, however the machine's load
// lets it spread over the cores); x_ideal2, the same ratio for a job that
// is all parallel (spin: a fixed amount of arithmetic on 1 goroutine, then
// split over 2), timed in the same iterations: the best x_w2 the machine
// allowed at the time.
func BenchmarkFinalizeWorkers(b *testing.B) {
	makers := []struct {
		name string
		make func() (Aggregator, error)
	}{
		{"vote-clamp", func() (Aggregator, error) { return NewClampedVote(benchSpec, 0) }},
		{"vote-robust", func() (Aggregator, error) { return NewFilteredVote(benchSpec) }},
		{"vote-median", func() (Aggregator, error) { return NewMedianVote(benchSpec) }},
		{"median", func() (Aggregator, error) { return NewMedian(benchSpec) }},
		{"trimmed-mean", func() (Aggregator, error) { return NewTrimmedMean(benchSpec, 0.4) }},
		{"multi-krum", func() (Aggregator, error) { return NewMultiKrum(benchSpec, -1, 0) }},
	}
	frlGlobal, denseGlobal := benchGlobals()
	inputs := []struct {
		name    string
		ranking bool
		us      []Update
	}{
		{"near", true, nearUpdates(25)},
		{"random", true, benchUpdates(true, 25)},
		{"dense", false, benchUpdates(false, 25)},
	}
	for _, in := range inputs {
		for _, m := range makers {
			probe, _ := m.make()
			if _, ok := probe.(Parallel); !ok {
				continue
			}
			if ranking := probe.Name() != "median" && probe.Name() != "trimmed-mean" && probe.Name() != "multi-krum"; ranking != in.ranking {
				continue
			}
			b.Run(fmt.Sprintf("%s/%s", in.name, m.name), func(b *testing.B) {
				global := denseGlobal
				if in.ranking {
					global = frlGlobal
				}
				var aggs [2]Aggregator
				for w := range aggs {
					a, err := m.make()
					if err != nil {
						b.Fatal(err)
					}
					a.(Parallel).SetWorkers(w + 1)
					aggs[w] = a
					round(b, a, global, in.us) // warm
				}
				var times, cpu [2]time.Duration
				finalize := func(w int) {
					a := aggs[w]
					if err := a.Begin(1, global); err != nil {
						b.Fatal(err)
					}
					for _, u := range in.us {
						if err := a.Add(u); err != nil {
							b.Fatal(err)
						}
					}
					t0, c0 := time.Now(), processCPU()
					if _, err := a.Finalize(); err != nil {
						b.Fatal(err)
					}
					times[w] += time.Since(t0)
					cpu[w] += processCPU() - c0
				}
				var burn [2]time.Duration
				b.ResetTimer()
				for i := range b.N {
					finalize(i % 2)
					finalize(1 - i%2)
					burn[0] += spin(1, 20_000_000)
					burn[1] += spin(2, 20_000_000)
				}
				b.ReportMetric(times[0].Seconds()*1000/float64(b.N), "ms_w1")
				b.ReportMetric(times[1].Seconds()*1000/float64(b.N), "ms_w2")
				b.ReportMetric(float64(times[1])/float64(times[0]), "x_w2")
				b.ReportMetric(float64(burn[1])/float64(burn[0]), "x_ideal2")
				b.ReportMetric(cpu[0].Seconds()*1000/float64(b.N), "cpu_ms_w1")
				b.ReportMetric(cpu[1].Seconds()*1000/float64(b.N), "cpu_ms_w2")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// spinSink keeps spin's arithmetic from being optimised away.
var spinSink atomic.Uint64

// spin does n steps of a linear congruential generator, split over g
// goroutines, and returns its wall time.
func spin(g, n int) time.Duration {
	t0 := time.Now()
	var wg sync.WaitGroup
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for range n / g {
				x = x*6364136223846793005 + 1442695040888963407
			}
			spinSink.Add(x)
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

// benchGlobals are the round's global models of the benchmarks: the
// identity ranking of every layer of benchSpec, and zero dense weights.
func benchGlobals() (frl, dense []byte) {
	var o [][]uint32
	for _, n := range benchSpec.Layers() {
		r := make([]uint32, n)
		for i := range r {
			r[i] = uint32(i)
		}
		o = append(o, r)
	}
	return benchSpec.EncodeFRLModel(o), benchSpec.EncodeDenseModel([][]float32{make([]float32, 235200), make([]float32, 30000), make([]float32, 1000)})
}

//go:build goexperiment.simd && amd64

package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkEvaluateVector times the evaluation pass (10,000 MNIST test
// images, the initial supermask) with the AVX-512 axpy and with the
// portable kernel, alternating in the same iterations. Metrics: ms_vector,
// ms_portable, and x_portable, the portable time over the vector time.
func BenchmarkEvaluateVector(b *testing.B) {
	if !vectorKernels {
		b.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	_, test := loadMNIST(b)
	eff, colsum := initialEffective(b)
	ev := NewEvaluator(lenet)
	var times [2]time.Duration
	run := func(vec bool) {
		vectorKernels = vec
		t0 := time.Now()
		ev.Run(eff, colsum, test, 0, test.N)
		if vec {
			times[0] += time.Since(t0)
		} else {
			times[1] += time.Since(t0)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		run(i%2 == 0)
		run(i%2 == 1)
	}
	b.ReportMetric(times[0].Seconds()*1000/float64(b.N), "ms_vector")
	b.ReportMetric(times[1].Seconds()*1000/float64(b.N), "ms_portable")
	b.ReportMetric(float64(times[1])/float64(times[0]), "x_portable")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkSupermaskClientVector trains one FRL client as
// BenchmarkSupermaskClient's "band" (60 images, 2 epochs, 16 steps at
// batch 8) with the vector kernels and with the portable ones, alternating
// in the same iterations, and checks that both train the same scores.
// Metrics: ms_vector, ms_portable, x_portable.
func BenchmarkSupermaskClientVector(b *testing.B) {
	if !vectorKernels {
		b.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	train, _ := loadMNIST(b)
	net, err := NewSupermask(lenet, 1)
	if err != nil {
		b.Fatal(err)
	}
	samples := make([]int32, 60)
	for i := range samples {
		samples[i] = int32(i * 7)
	}
	orders := make([][]uint32, len(net.Layers))
	for l := range net.Layers {
		orders[l] = net.Layers[l].InitOrder
	}
	trs := [2]*SupermaskTrainer{net.NewTrainer(8), net.NewTrainer(8)}
	var times [2]time.Duration
	run := func(i, v int) {
		vectorKernels = v == 0
		tr := trs[v]
		t0 := time.Now()
		if err := tr.Load(orders); err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Train(train, samples, frlHyper(), rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
			b.Fatal(err)
		}
		times[v] += time.Since(t0)
	}
	b.ResetTimer()
	for i := range b.N {
		run(i, i%2)
		run(i, 1-i%2)
		for l := range trs[0].scores {
			if !slices.EqualFunc(trs[0].scores[l], trs[1].scores[l], func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) }) {
				b.Fatalf("iteration %d: layer %d's trained scores differ", i, l)
			}
		}
	}
	b.ReportMetric(times[0].Seconds()*1000/float64(b.N), "ms_vector")
	b.ReportMetric(times[1].Seconds()*1000/float64(b.N), "ms_portable")
	b.ReportMetric(float64(times[1])/float64(times[0]), "x_portable")
	b.ReportMetric(0, "ns/op")
}

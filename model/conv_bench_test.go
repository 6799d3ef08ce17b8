package model

import (
	"math/rand/v2"
	"testing"
)

// The LeNet (convolutional) model against the fully connected
// LeNet-300-100 in the same run: one FRL client's local training (60
// images, 2 epochs, 16 steps at batch 8) and the evaluation pass over the
// 10,000 test images on one goroutine, supermask and dense (FedAvg).
// x_lenet is LeNet's time over the fully connected net's.

func BenchmarkLeNetClient(b *testing.B) {
	var fc, conv float64
	b.Run("fc", func(b *testing.B) {
		net, err := NewSupermask(lenet, 1)
		if err != nil {
			b.Fatal(err)
		}
		fc = benchSupermaskClient(b, net)
	})
	b.Run("lenet", func(b *testing.B) {
		net, err := NewConvSupermask(LeNet(), 1)
		if err != nil {
			b.Fatal(err)
		}
		conv = benchSupermaskClient(b, net)
	})
	if fc > 0 && conv > 0 {
		b.ReportMetric(conv/fc, "x_lenet")
	}
}

func BenchmarkLeNetDenseClient(b *testing.B) {
	var fc, conv float64
	b.Run("fc", func(b *testing.B) {
		net, err := NewDense(lenet, 1)
		if err != nil {
			b.Fatal(err)
		}
		fc = benchDenseClient(b, net)
	})
	b.Run("lenet", func(b *testing.B) {
		net, err := NewConvDense(LeNet(), 1)
		if err != nil {
			b.Fatal(err)
		}
		conv = benchDenseClient(b, net)
	})
	if fc > 0 && conv > 0 {
		b.ReportMetric(conv/fc, "x_lenet")
	}
}

func BenchmarkLeNetEvaluate(b *testing.B) {
	var fc, conv float64
	b.Run("fc", func(b *testing.B) {
		net, err := NewSupermask(lenet, 1)
		if err != nil {
			b.Fatal(err)
		}
		fc = benchSupermaskEval(b, net, NewEvaluator(lenet))
	})
	b.Run("lenet", func(b *testing.B) {
		net, err := NewConvSupermask(LeNet(), 1)
		if err != nil {
			b.Fatal(err)
		}
		conv = benchSupermaskEval(b, net, NewConvEvaluator(LeNet()))
	})
	if fc > 0 && conv > 0 {
		b.ReportMetric(conv/fc, "x_lenet")
	}
}

func clientSamples() []int32 {
	samples := make([]int32, 60)
	for i := range samples {
		samples[i] = int32(i * 7)
	}
	return samples
}

func initOrders(net *Supermask) [][]uint32 {
	orders := make([][]uint32, len(net.Layers))
	for l := range net.Layers {
		orders[l] = net.Layers[l].InitOrder
	}
	return orders
}

func benchSupermaskClient(b *testing.B, net *Supermask) float64 {
	train, _ := loadMNIST(b)
	tr := net.NewTrainer(8)
	samples, orders := clientSamples(), initOrders(net)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tr.Load(orders); err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Train(train, samples, frlHyper(), rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "steps/s")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

func benchDenseClient(b *testing.B, net *Dense) float64 {
	train, _ := loadMNIST(b)
	tr := net.NewTrainer(8)
	samples := clientSamples()
	h := frlHyper()
	h.LR = 0.01
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tr.Load(net.Init); err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Train(train, samples, h, rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "steps/s")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

func benchSupermaskEval(b *testing.B, net *Supermask, ev *Evaluator) float64 {
	_, test := loadMNIST(b)
	eff, colsum, err := net.EffectiveFromRanking(initOrders(net), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Run(eff, colsum, test, 0, test.N)
	}
	b.ReportMetric(float64(b.N*test.N)/b.Elapsed().Seconds(), "images/s")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

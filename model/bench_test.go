package model

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/data"
)

var (
	mnistOnce             sync.Once
	mnistTrain, mnistTest *Inputs
	mnistErr              error
)

func loadMNIST(tb testing.TB) (*Inputs, *Inputs) {
	tb.Helper()
	mnistOnce.Do(func() {
		dir, err := data.MNISTDir("")
		if err != nil {
			mnistErr = err
			return
		}
		tr, te, err := data.LoadMNIST(dir)
		if err != nil {
			mnistErr = err
			return
		}
		if mnistTrain, mnistErr = NewInputs(tr, data.MNISTMean, data.MNISTStd); mnistErr != nil {
			return
		}
		mnistTest, mnistErr = NewInputs(te, data.MNISTMean, data.MNISTStd)
	})
	if mnistErr != nil {
		tb.Fatalf("loading MNIST: %v", mnistErr)
	}
	return mnistTrain, mnistTest
}

var lenet = []int{784, 300, 100, 10}

func frlHyper() Hyper {
	return Hyper{LR: 0.4, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true}
}

// BenchmarkSupermaskClient trains one FRL client of 60 MNIST images for 2
// local epochs (16 steps at batch 8): the unit of work of an FRL round.
// "band" tracks each step's mask threshold in a narrow band during the update
// pass; "fullselect" selects it over all scores every step (the baseline,
// same result). x_fullselect is the baseline's time over the band's, both
// measured in this run.
func BenchmarkSupermaskClient(b *testing.B) {
	var band, full float64
	b.Run("band", func(b *testing.B) { band = benchClient(b, false) })
	b.Run("fullselect", func(b *testing.B) { full = benchClient(b, true) })
	if band > 0 && full > 0 {
		b.Logf("x_fullselect = %.2f", full/band)
	}
}

func benchClient(b *testing.B, fullSelect bool) float64 {
	train, _ := loadMNIST(b)
	net, err := NewSupermask(lenet, 1)
	if err != nil {
		b.Fatal(err)
	}
	tr := net.NewTrainer(8)
	tr.FullSelect = fullSelect
	samples := make([]int32, 60)
	for i := range samples {
		samples[i] = int32(i * 7)
	}
	orders := make([][]uint32, len(net.Layers))
	for l := range net.Layers {
		orders[l] = net.Layers[l].InitOrder
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := tr.Load(orders); err != nil {
			b.Fatal(err)
		}
		if _, err := tr.Train(train, samples, frlHyper(), rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(tr.Fallbacks)/float64(b.N), "fallbacks/op")
	b.ReportMetric(float64(b.N*16)/b.Elapsed().Seconds(), "steps/s")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// BenchmarkEvaluate scores a supermask global model on the 10,000 test images (one goroutine).
func BenchmarkEvaluate(b *testing.B) {
	_, test := loadMNIST(b)
	eff, colsum := initialEffective(b)
	ev := NewEvaluator(lenet)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Run(eff, colsum, test, 0, test.N)
	}
	b.ReportMetric(float64(b.N*test.N)/b.Elapsed().Seconds(), "images/s")
}

// initialEffective is the effective weights (and first-layer column sums)
// of a seed-1 supermask LeNet-300-100 at its initial ranking, the model the
// evaluation benchmarks and the vector build's test score.
func initialEffective(tb testing.TB) (eff [][]float32, colsum []float32) {
	tb.Helper()
	net, err := NewSupermask(lenet, 1)
	if err != nil {
		tb.Fatal(err)
	}
	orders := make([][]uint32, len(net.Layers))
	for l := range net.Layers {
		orders[l] = net.Layers[l].InitOrder
	}
	eff, colsum, err = net.EffectiveFromRanking(orders, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return eff, colsum
}

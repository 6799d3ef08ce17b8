package model

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkLeNetVsFC times the LeNet (convolutional) model against the
// fully connected LeNet-300-100, both in every iteration, so that the ratio
// holds on a loaded machine:
//
//   - frl-client: one FRL client's local training of the supermask (60
//     images, 2 epochs, 16 steps at batch 8), the unit of work of a round;
//   - fedavg-client: the same client training dense weights (FedAvg);
//   - evaluate: scoring 2,000 test images on one goroutine (a round scores
//     all 10,000 over the workers).
//
// ms_fc and ms_lenet are the times of one iteration of each, x_lenet their
// ratio.
func BenchmarkLeNetVsFC(b *testing.B) {
	train, test := loadMNIST(b)
	fcNet, err := NewSupermask(lenet, 1)
	if err != nil {
		b.Fatal(err)
	}
	convNet, err := NewConvSupermask(LeNet(), 1)
	if err != nil {
		b.Fatal(err)
	}
	fcDense, err := NewDense(lenet, 1)
	if err != nil {
		b.Fatal(err)
	}
	convDense, err := NewConvDense(LeNet(), 1)
	if err != nil {
		b.Fatal(err)
	}
	samples := clientSamples()
	dh := frlHyper()
	dh.LR = 0.01
	frlClient := func(net *Supermask) func(int) {
		tr := net.NewTrainer(8)
		orders := initOrders(net)
		return func(i int) {
			if err := tr.Load(orders); err != nil {
				b.Fatal(err)
			}
			if _, err := tr.Train(train, samples, frlHyper(), rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
				b.Fatal(err)
			}
		}
	}
	denseClient := func(net *Dense) func(int) {
		tr := net.NewTrainer(8)
		return func(i int) {
			if err := tr.Load(net.Init); err != nil {
				b.Fatal(err)
			}
			if _, err := tr.Train(train, samples, dh, rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
				b.Fatal(err)
			}
		}
	}
	eval := func(net *Supermask, ev *Evaluator) func(int) {
		eff, colsum, err := net.EffectiveFromRanking(initOrders(net), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		return func(int) { ev.Run(eff, colsum, test, 0, 2000) }
	}
	for _, c := range []struct {
		name     string
		fc, conv func(int)
	}{
		{"frl-client", frlClient(fcNet), frlClient(convNet)},
		{"fedavg-client", denseClient(fcDense), denseClient(convDense)},
		{"evaluate", eval(fcNet, NewEvaluator(lenet)), eval(convNet, NewConvEvaluator(LeNet()))},
	} {
		b.Run(c.name, func(b *testing.B) {
			var tf, tc time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				c.fc(i)
				t1 := time.Now()
				c.conv(i)
				tf += t1.Sub(t0)
				tc += time.Since(t1)
			}
			b.ReportMetric(float64(tf.Microseconds())/1e3/float64(b.N), "ms_fc")
			b.ReportMetric(float64(tc.Microseconds())/1e3/float64(b.N), "ms_lenet")
			b.ReportMetric(float64(tc)/float64(tf), "x_lenet")
		})
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

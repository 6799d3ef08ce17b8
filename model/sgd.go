package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Hyper holds the local training settings. The FRL reference uses SGD with
// lr 0.4·0.999^round, momentum 0.9 (fresh each round), weight decay 1e-4,
// 2 epochs, batch 8 and cosine annealing over the epochs.
type Hyper struct {
	LR          float64 // learning rate of the first local epoch
	Momentum    float64
	WeightDecay float64
	Epochs      int
	Batch       int
	// Cosine anneals the rate once per epoch: lr·(1+cos(π·epoch/Epochs))/2
	// (PyTorch's CosineAnnealingLR with T_max = Epochs, stepped per epoch).
	Cosine bool
}

// Validate reports the first invalid setting.
func (h Hyper) Validate() error {
	switch {
	case !(h.LR > 0) || math.IsInf(h.LR, 0):
		return fmt.Errorf("model: learning rate %v must be > 0 and finite", h.LR)
	case h.Momentum < 0 || h.Momentum >= 1:
		return fmt.Errorf("model: momentum %v must be in [0,1)", h.Momentum)
	case h.WeightDecay < 0:
		return fmt.Errorf("model: weight decay %v must be >= 0", h.WeightDecay)
	case h.Epochs < 1:
		return fmt.Errorf("model: epochs %d must be >= 1", h.Epochs)
	case h.Batch < 1:
		return fmt.Errorf("model: batch %d must be >= 1", h.Batch)
	}
	return nil
}

// EpochLR is the learning rate of local epoch ep (from 0).
func (h Hyper) EpochLR(ep int) float64 {
	if !h.Cosine {
		return h.LR
	}
	return h.LR * (1 + math.Cos(math.Pi*float64(ep)/float64(h.Epochs))) / 2
}

// netEngine is what runEpochs and the trainers need of a network's forward
// and backward passes: the fully connected engine (mlp.go) or the
// convolutional one (conv.go).
type netEngine interface {
	// batchCap is the largest batch the engine's buffers hold.
	batchCap() int
	// forward runs images imgs of in through the network with effective
	// weights eff (colsum: Σ_i eff[0][i,:], used by the fully connected
	// engine's sparse first layer) and leaves the logits in the engine.
	forward(eff [][]float32, colsum []float32, in *Inputs, imgs []int32)
	// loss is the summed cross-entropy of the batch and the number
	// classified correctly; with grad, it also leaves the gradient of the
	// mean loss with respect to the logits in the engine.
	loss(in *Inputs, imgs []int32, grad bool) (float64, int)
	// backward propagates the logits' gradient through eff.
	backward(eff [][]float32, in *Inputs, imgs []int32)
	// rowGrad is the gradient of the mean loss with respect to row i (input
	// i, Out entries) of layer l's effective weights, after backward. It
	// aliases engine scratch and is valid until the next call.
	rowGrad(l, i, B int, offset float32) []float32
}

// stepper is what a trainer does with one batch's gradients.
type stepper[E netEngine] interface {
	// forward runs a batch through the network, leaving the logits in the
	// engine, and returns the effective weights that backward propagates
	// through.
	forward(e E, in *Inputs, batch []int32) [][]float32
	// update applies one SGD step with the gradients held by the engine.
	update(e E, B int, offset, lr float32)
}

// runEpochs runs local SGD over samples (indices into in) and returns the
// mean training loss of the last epoch.
func runEpochs[E netEngine](e E, st stepper[E], in *Inputs, samples []int32, h Hyper, rng *rand.Rand, order []int32) ([]int32, float64, error) {
	if err := h.Validate(); err != nil {
		return order, 0, err
	}
	if h.Batch > e.batchCap() {
		return order, 0, fmt.Errorf("model: batch %d exceeds the trainer's %d", h.Batch, e.batchCap())
	}
	order = append(order[:0], samples...)
	var lossSum float64
	for ep := 0; ep < h.Epochs; ep++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		lr := float32(h.EpochLR(ep))
		lossSum = 0
		for lo := 0; lo < len(order); lo += h.Batch {
			batch := order[lo:min(lo+h.Batch, len(order))]
			eff := st.forward(e, in, batch)
			l, _ := e.loss(in, batch, true)
			lossSum += l
			e.backward(eff, in, batch)
			st.update(e, len(batch), in.Offset, lr)
		}
	}
	if len(order) == 0 {
		return order, 0, nil
	}
	return order, lossSum / float64(len(order)), nil
}

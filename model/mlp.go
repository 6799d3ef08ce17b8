package model

import (
	"fmt"
	"math"
)

// The networks here are fully connected, ReLU, without biases (LeNet-300-100
// is 784-300-100-10). Layer l maps Sizes[l] inputs to Sizes[l+1] outputs; its
// weights are stored input-major, so edge e = i*Out + o. Forward and backward
// work on "effective" weights: w·mask for a supermask layer, w for a dense one.

// ValidateSizes checks a layer-size list.
func ValidateSizes(sizes []int) error {
	if len(sizes) < 2 {
		return fmt.Errorf("model: need at least an input and an output size, got %v", sizes)
	}
	for i, s := range sizes {
		if s <= 0 {
			return fmt.Errorf("model: layer size %d is %d, must be > 0", i, s)
		}
	}
	if sizes[0] > 1<<16 {
		return fmt.Errorf("model: input size %d exceeds 65536", sizes[0])
	}
	return nil
}

// engine holds the per-batch buffers of forward and backward passes. One
// engine serves one goroutine.
type engine struct {
	sizes []int
	maxB  int
	out   [][]float32 // out[l]: B×Sizes[l+1]; ReLU applied except on the logits
	dz    [][]float32 // dz[l]: dLoss/d(pre-activation) of layer l's outputs
	probs []float32
	sumDz []float32 // Σ_b dz[0][b,:]
	// The batch's non-zero pixels grouped by pixel: entries rowStart[i]..rowStart[i+1]
	// are (rowB, rowV) pairs of the images that have pixel i.
	rowStart []int32
	rowB     []int32
	rowV     []float32
	grow     []float32 // one row of a weight gradient
	zeros    []float32
}

func newEngine(sizes []int, maxB int) *engine {
	L := len(sizes) - 1
	e := &engine{sizes: sizes, maxB: maxB}
	e.out = make([][]float32, L)
	e.dz = make([][]float32, L)
	maxOut := 0
	for l := 0; l < L; l++ {
		e.out[l] = make([]float32, maxB*sizes[l+1])
		e.dz[l] = make([]float32, maxB*sizes[l+1])
		maxOut = max(maxOut, sizes[l+1])
	}
	e.probs = make([]float32, sizes[L])
	e.sumDz = make([]float32, sizes[1])
	e.rowStart = make([]int32, sizes[0]+1)
	e.grow = make([]float32, maxOut)
	e.zeros = make([]float32, maxOut)
	return e
}

func (e *engine) batchCap() int { return e.maxB }

func relu(z []float32) {
	for i, v := range z {
		if v < 0 {
			z[i] = 0
		}
	}
}

// forward runs images imgs of in through the network and leaves the logits in
// out[L-1]. colsum is Σ_i eff[0][i,:], needed for the inputs' constant offset.
func (e *engine) forward(eff [][]float32, colsum []float32, in *Inputs, imgs []int32) {
	L := len(e.sizes) - 1
	B := len(imgs)
	O := e.sizes[1]
	eff0 := eff[0]
	z := e.out[0][:B*O]
	for b, k := range imgs {
		zb := z[b*O : (b+1)*O]
		scaleInto(in.Offset, colsum, zb)
		lo, hi := in.Ptr[k], in.Ptr[k+1]
		idx, val := in.Idx[lo:hi], in.Val[lo:hi]
		if !sparseRowsVector(zb, eff0, O, idx, val) {
			for p, i := range idx {
				r := int(i) * O
				axpy(val[p], eff0[r:r+O], zb)
			}
		}
		if L > 1 {
			relu(zb)
		}
	}
	e.forwardHidden(eff, B)
}

// forwardHidden runs layers 1..L-1 on the first layer's outputs in out[0].
func (e *engine) forwardHidden(eff [][]float32, B int) {
	L := len(e.sizes) - 1
	for l := 1; l < L; l++ {
		I, O := e.sizes[l], e.sizes[l+1]
		h := e.out[l-1][:B*I]
		z := e.out[l][:B*O]
		w := eff[l]
		for b := 0; b < B; b++ {
			zb := z[b*O : (b+1)*O]
			fill(zb, 0)
			for i, v := range h[b*I : (b+1)*I] {
				if v > 0 {
					axpy(v, w[i*O:(i+1)*O], zb)
				}
			}
			if l < L-1 {
				relu(zb)
			}
		}
	}
}

// logSoftmax fills p with the class probabilities of logits z and returns
// log p[y].
func logSoftmax(z, p []float32, y int) float64 {
	m := z[0]
	for _, v := range z[1:] {
		m = max(m, v)
	}
	var sum float64
	for c, v := range z {
		ev := math.Exp(float64(v - m))
		p[c] = float32(ev)
		sum += ev
	}
	inv := 1 / sum
	for c := range p {
		p[c] = float32(float64(p[c]) * inv)
	}
	return float64(z[y]-m) - math.Log(sum)
}

// maxImageLoss caps one image's cross-entropy in evaluation: -log of the
// smallest positive float32. A diverged model (weights overflowed to ±Inf or
// NaN, as under a scaling attack on FedAvg) then scores a large, finite loss
// that reports can hold, instead of NaN.
var maxImageLoss = -math.Log(math.SmallestNonzeroFloat32)

// loss computes the summed cross-entropy of the batch and, if grad, the
// gradient of the mean with respect to the logits into dz[L-1].
func (e *engine) loss(in *Inputs, imgs []int32, grad bool) (sum float64, correct int) {
	L := len(e.sizes) - 1
	return batchLoss(e.out[L-1], e.dz[L-1], e.probs, e.sizes[L], in, imgs, grad)
}

// batchLoss computes the summed cross-entropy of a batch whose logits are
// z (B×C) and, if grad, the gradient of the mean with respect to them into
// dz; probs is scratch of C entries.
func batchLoss(z, dz, probs []float32, C int, in *Inputs, imgs []int32, grad bool) (sum float64, correct int) {
	invB := 1 / float32(len(imgs))
	for b, k := range imgs {
		y := int(in.Labels[k])
		zb := z[b*C : (b+1)*C]
		l := -logSoftmax(zb, probs, y)
		if !grad && !(l <= maxImageLoss) { // also catches NaN
			l = maxImageLoss
		}
		sum += l
		best := 0
		for c := 1; c < C; c++ {
			if zb[c] > zb[best] {
				best = c
			}
		}
		if best == y {
			correct++
		}
		if grad {
			db := dz[b*C : (b+1)*C]
			for c, p := range probs {
				db[c] = p * invB
			}
			db[y] -= invB
		}
	}
	return sum, correct
}

// backward propagates dz[L-1] down to dz[0] through the effective weights,
// and prepares the first layer's per-pixel lists for rowGrad.
func (e *engine) backward(eff [][]float32, in *Inputs, imgs []int32) {
	L := len(e.sizes) - 1
	B := len(imgs)
	for l := L - 1; l >= 1; l-- {
		I, O := e.sizes[l], e.sizes[l+1]
		dz := e.dz[l][:B*O]
		h := e.out[l-1][:B*I]
		dprev := e.dz[l-1][:B*I]
		w := eff[l]
		for b := 0; b < B; b++ {
			db := dz[b*O : (b+1)*O]
			hb := h[b*I : (b+1)*I]
			pb := dprev[b*I : (b+1)*I]
			for i, v := range hb {
				if v > 0 {
					pb[i] = dot(db, w[i*O:(i+1)*O])
				} else {
					pb[i] = 0
				}
			}
		}
	}
	// Σ_b dz[0][b,:] carries the constant input offset.
	O := e.sizes[1]
	fill(e.sumDz, 0)
	for b := 0; b < B; b++ {
		axpy(1, e.dz[0][b*O:(b+1)*O], e.sumDz)
	}
	// Group the batch's pixels by pixel index (a counting sort).
	start := e.rowStart
	for i := range start {
		start[i] = 0
	}
	total := 0
	for _, k := range imgs {
		for _, i := range in.Idx[in.Ptr[k]:in.Ptr[k+1]] {
			start[int(i)+1]++
		}
		total += int(in.Ptr[k+1] - in.Ptr[k])
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	if cap(e.rowB) < total {
		e.rowB = make([]int32, total)
		e.rowV = make([]float32, total)
	}
	e.rowB, e.rowV = e.rowB[:total], e.rowV[:total]
	for b, k := range imgs {
		lo, hi := in.Ptr[k], in.Ptr[k+1]
		for p, i := range in.Idx[lo:hi] {
			at := start[i]
			e.rowB[at] = int32(b)
			e.rowV[at] = in.Val[int(lo)+p]
			start[i]++
		}
	}
	// start[i] now holds the end of row i; shift back to starts.
	copy(start[1:], start[:len(start)-1])
	start[0] = 0
}

// rowGrad returns the gradient of the loss with respect to row i (input i)
// of layer l's effective weights, after forward, loss and backward. The
// result aliases engine scratch and is valid until the next call.
func (e *engine) rowGrad(l, i, B int, offset float32) []float32 {
	O := e.sizes[l+1]
	g := e.grow[:O]
	dz := e.dz[l]
	if l == 0 {
		scaleInto(offset, e.sumDz, g)
		lo, hi := e.rowStart[i], e.rowStart[i+1]
		for p := lo; p < hi; p++ {
			b := int(e.rowB[p])
			axpy(e.rowV[p], dz[b*O:(b+1)*O], g)
		}
		return g
	}
	I := e.sizes[l]
	h := e.out[l-1]
	started := false
	for b := 0; b < B; b++ {
		v := h[b*I+i]
		if v <= 0 {
			continue
		}
		if !started {
			scaleInto(v, dz[b*O:(b+1)*O], g)
			started = true
		} else {
			axpy(v, dz[b*O:(b+1)*O], g)
		}
	}
	if !started {
		return e.zeros[:O]
	}
	return g
}

package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// LoRATrainer trains the adapter factors of a LoRA network on one goroutine,
// reusing the dense engine's loss and backward passes. The factor gradients
// follow from the effective-weight gradient G = Xᵀ·dZ by the chain rule
// without ever forming G:
//
//	dA = s·(dZ·Btᵀ)ᵀ·X     (r×In: B·r·Out + B·r·In multiply-adds)
//	dBt = s·(X·Aᵀ)ᵀ·dZ     (r×Out: B·r·In + B·r·Out)
//
// where X is the layer's batch input (B×In) and dZ the gradient of its
// pre-activations (B×Out). The first layer's X is sparse plus a constant
// offset, which both products exploit.
//
// Layers after the first run on effective weights W0 + s·AᵀBt, refreshed after
// each step (r·In·Out multiply-adds: small for those layers). The first layer
// is the large one (784×300) and needs no effective weights at all: its
// forward pass is x·W0 + s·(x·Aᵀ)·Bt on the image's non-zero pixels, and the
// backward pass never propagates below it. So a step costs about what a dense
// step costs, whatever the rank.
type LoRATrainer struct {
	net    *LoRA
	e      *engine
	ranks  []int
	trainA bool
	A, Bt  [][]float32 // current factors (owned)
	gA, gB [][]float32
	mA, mB [][]float32 // momentum
	eff    [][]float32
	colsum []float32
	u, t   []float32 // B×r scratch: dZ·Btᵀ and X·Aᵀ
	us     []float32 // r scratch: Σ_b u[b,:]
	t0     []float32 // B×r: the sparse part of the first layer's X·Aᵀ, from forward
	stale  bool      // eff[0] lags the factors (training skips refreshing it)
	order  []int32
	mu, wd float32
	clip   float64 // gradient-norm clipping threshold (0: none)
}

// NewTrainer returns a trainer for batches of at most maxBatch images.
func (n *LoRA) NewTrainer(maxBatch int) *LoRATrainer {
	L := len(n.Ranks)
	t := &LoRATrainer{
		net: n, e: newEngine(n.Sizes, maxBatch),
		A: make([][]float32, L), Bt: make([][]float32, L),
		gA: make([][]float32, L), gB: make([][]float32, L),
		mA: make([][]float32, L), mB: make([][]float32, L),
		eff: make([][]float32, L), colsum: make([]float32, n.Sizes[1]),
	}
	maxR := 0
	for l, r := range n.Ranks {
		in, out := n.Sizes[l], n.Sizes[l+1]
		t.A[l], t.gA[l], t.mA[l] = make([]float32, 0, r*in), make([]float32, r*in), make([]float32, r*in)
		t.Bt[l], t.gB[l], t.mB[l] = make([]float32, 0, r*out), make([]float32, r*out), make([]float32, r*out)
		t.eff[l] = make([]float32, in*out)
		maxR = max(maxR, r)
	}
	t.u = make([]float32, maxBatch*maxR)
	t.t = make([]float32, maxBatch*maxR)
	t.us = make([]float32, maxR)
	t.t0 = make([]float32, maxBatch*maxR)
	return t
}

// Load starts a run from factors A and Bt (copied; any rank up to the
// network's, per layer) and resets momentum. With trainA false, A stays
// frozen and only Bt learns (FFA-LoRA).
func (t *LoRATrainer) Load(A, Bt [][]float32, trainA bool) error {
	ranks, err := t.net.checkFactors(A, Bt, t.ranks)
	if err != nil {
		return err
	}
	t.ranks, t.trainA = ranks, trainA
	for l := range A {
		t.A[l] = append(t.A[l][:0], A[l]...)
		t.Bt[l] = append(t.Bt[l][:0], Bt[l]...)
		clear(t.mA[l])
		clear(t.mB[l])
		if l > 0 {
			t.net.effectiveLayer(l, ranks[l], t.A[l], t.Bt[l], t.eff[l])
		}
	}
	t.net.effectiveColsum(ranks[0], t.A[0], t.Bt[0], t.colsum)
	t.stale = true
	return nil
}

// SetClip clips each step's gradient (A and B of all layers together) to
// Euclidean norm at most maxNorm; 0 turns clipping off. Adapters on a trained
// base see a few very large gradients on skewed local data (a class the
// base never predicts), and one step along such a gradient can throw a peer's
// factors far off; clipping bounds every step.
func (t *LoRATrainer) SetClip(maxNorm float64) { t.clip = maxNorm }

// Factors returns the current factors (aliased; valid until the next Load).
func (t *LoRATrainer) Factors() (A, Bt [][]float32) { return t.A, t.Bt }

// Effective returns the current effective weights and first-layer column sums
// (aliased; valid until the next Train or Load).
func (t *LoRATrainer) Effective() ([][]float32, []float32) {
	if t.stale {
		t.net.effectiveLayer(0, t.ranks[0], t.A[0], t.Bt[0], t.eff[0])
		t.stale = false
	}
	return t.eff, t.colsum
}

// Train runs local SGD on the factors and returns the mean loss of the last epoch.
func (t *LoRATrainer) Train(in *Inputs, samples []int32, h Hyper, rng *rand.Rand) (float64, error) {
	if in.Dim != t.net.Sizes[0] {
		return 0, fmt.Errorf("model: inputs have %d features, network expects %d", in.Dim, t.net.Sizes[0])
	}
	if t.ranks == nil {
		return 0, fmt.Errorf("model: LoRA trainer used before Load")
	}
	t.mu, t.wd = float32(h.Momentum), float32(h.WeightDecay)
	var loss float64
	var err error
	t.order, loss, err = runEpochs(t.e, t, in, samples, h, rng, t.order)
	return loss, err
}

// forward is engine.forward with the first layer computed as
// offset·colsum(W) + v·W0 + s·(v·Aᵀ)·Bt (v: the image's non-zero pixels); the
// offset term uses the effective column sums. The other layers run on the
// effective weights. It leaves t[b,j] = v_b·A_jᵀ of the first layer for grads.
func (t *LoRATrainer) forward(e *engine, in *Inputs, imgs []int32) [][]float32 {
	sizes := t.net.Sizes
	L := len(sizes) - 1
	B := len(imgs)
	I, O := sizes[0], sizes[1]
	r := t.ranks[0]
	w0, A, Bt, s := t.net.Base[0], t.A[0], t.Bt[0], t.net.Scales[0]
	z := e.out[0][:B*O]
	tt := t.t0[:B*r]
	for b, k := range imgs {
		zb := z[b*O : (b+1)*O]
		scaleInto(in.Offset, t.colsum, zb)
		lo, hi := in.Ptr[k], in.Ptr[k+1]
		idx, val := in.Idx[lo:hi], in.Val[lo:hi]
		tb := tt[b*r : (b+1)*r]
		clear(tb)
		for p, i := range idx {
			row := int(i) * O
			v := val[p]
			axpy(v, w0[row:row+O], zb)
			for j := range r {
				tb[j] += v * A[j*I+int(i)]
			}
		}
		for j := range r {
			axpy(s*tb[j], Bt[j*O:(j+1)*O], zb)
		}
		if L > 1 {
			relu(zb)
		}
	}
	e.forwardHidden(t.eff, B)
	return t.eff
}

func (t *LoRATrainer) update(e *engine, B int, offset, lr float32) {
	t.grads(e, B, offset)
	if t.clip > 0 {
		var sq float64
		for l, r := range t.ranks {
			if r == 0 {
				continue
			}
			if t.trainA {
				sq += sumSquares(t.gA[l][:len(t.A[l])])
			}
			sq += sumSquares(t.gB[l][:len(t.Bt[l])])
		}
		if n := math.Sqrt(sq); n > t.clip {
			c := float32(t.clip / n)
			for l := range t.ranks {
				scaleInto(c, t.gA[l], t.gA[l])
				scaleInto(c, t.gB[l], t.gB[l])
			}
		}
	}
	for l, r := range t.ranks {
		if r == 0 {
			continue
		}
		if t.trainA {
			denseUpdateRow(t.A[l], t.mA[l][:len(t.A[l])], t.gA[l], lr, t.mu, t.wd)
		}
		denseUpdateRow(t.Bt[l], t.mB[l][:len(t.Bt[l])], t.gB[l], lr, t.mu, t.wd)
		if l > 0 {
			t.net.effectiveLayer(l, r, t.A[l], t.Bt[l], t.eff[l])
		}
	}
	t.net.effectiveColsum(t.ranks[0], t.A[0], t.Bt[0], t.colsum)
	t.stale = true
}

// grads fills gA and gB with the factor gradients of the batch held by the
// engine (after forward, loss and backward). Both come from the factors as
// they were before the step.
func (t *LoRATrainer) grads(e *engine, B int, offset float32) {
	sizes := t.net.Sizes
	for l, r := range t.ranks {
		if r == 0 {
			continue
		}
		in, out := sizes[l], sizes[l+1]
		s := t.net.Scales[l]
		A, Bt := t.A[l], t.Bt[l]
		dz := e.dz[l][:B*out]
		u, tt := t.u[:B*r], t.t[:B*r]
		// u[b,j] = Σ_o dz[b,o]·Bt[j,o]
		for b := range B {
			db := dz[b*out : (b+1)*out]
			for j := range r {
				u[b*r+j] = dot(db, Bt[j*out:(j+1)*out])
			}
		}
		// t[b,j] = Σ_i X[b,i]·A[j,i]
		gA := t.gA[l][:r*in]
		clear(tt)
		if l == 0 {
			// X[b,i] = v[b,i] + offset: the offset part is offset·Σ_i A[j,i]
			// for every image; the sparse part walks the batch's pixels,
			// grouped by pixel by backward.
			for j := range r {
				var sum float32
				for _, a := range A[j*in : (j+1)*in] {
					sum += a
				}
				for b := range B {
					tt[b*r+j] = offset * sum
				}
			}
			// dA[j,i] = s·(offset·Σ_b u[b,j] + Σ_{(b,v) at pixel i} v·u[b,j])
			us := t.us[:r]
			clear(us)
			for b := range B {
				for j := range r {
					us[j] += u[b*r+j]
				}
			}
			for j := range r {
				fill(gA[j*in:(j+1)*in], s*offset*us[j])
			}
			for i := range in {
				lo, hi := e.rowStart[i], e.rowStart[i+1]
				for p := lo; p < hi; p++ {
					b, v := int(e.rowB[p]), e.rowV[p]
					ub := u[b*r : (b+1)*r]
					for j := range r {
						gA[j*in+i] += s * v * ub[j]
					}
				}
			}
			for k, v := range t.t0[:B*r] {
				tt[k] += v
			}
		} else {
			h := e.out[l-1][:B*in]
			clear(gA)
			for b := range B {
				hb := h[b*in : (b+1)*in]
				ub, tb := u[b*r:(b+1)*r], tt[b*r:(b+1)*r]
				for j := range r {
					axpy(s*ub[j], hb, gA[j*in:(j+1)*in])
					tb[j] = dot(hb, A[j*in:(j+1)*in])
				}
			}
		}
		// dBt[j,o] = s·Σ_b t[b,j]·dz[b,o]
		gB := t.gB[l][:r*out]
		clear(gB)
		for b := range B {
			db := dz[b*out : (b+1)*out]
			for j := range r {
				axpy(s*tt[b*r+j], db, gB[j*out:(j+1)*out])
			}
		}
	}
}

func sumSquares(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
}

package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// MaskedLoRA is a supermask adapter on a frozen dense network (rank-vote
// fine-tuning): layer l's weights are
//
//	W = W0 + s·(M_A ⊙ A)ᵀ·(M_B ⊙ Bt),   s = alpha/r
//
// where A (r×In) and Bt (r×Out) are frozen random signed constants drawn
// from a seed, and the masks M_A, M_B keep the edges of largest |score| (a
// fraction of each factor), exactly as a supermask layer does. Only the
// scores train; a model is, per factor, the ranking of its edges.
//
// The factors of all layers form one supermask chain (AdapterChain):
// In_0, r_0, Out_0 = In_1, r_1, ..., Out_L. Its layer 2l is A_l stored
// input-major (In×r, edge i*r + j, the transpose of LoRA's A) and its layer
// 2l+1 is Bt_l (r×Out, edge j*Out + o, LoRA's layout). The chain's frozen
// weights, initial scores and masks are those of NewSupermaskKeep, so the
// rankings are FRL rankings of a network of sizes AdapterChain, and FRL's
// codecs and vote aggregators apply unchanged.
type MaskedLoRA struct {
	LoRA *LoRA      // the base, ranks and scales
	Mask *Supermask // the factor chain: frozen signed constants, initial scores, masks
}

// AdapterChain returns the supermask chain of the factors of adapters of
// the given per-layer ranks on a network of the given sizes.
func AdapterChain(sizes, ranks []int) []int {
	out := []int{sizes[0]}
	for l := 0; l+1 < len(sizes); l++ {
		out = append(out, ranks[l], sizes[l+1])
	}
	return out
}

// NewMaskedLoRA wraps base weights (shared, not copied) with supermask
// adapters of the given per-layer ranks (each at least 1) and alphas, whose
// constants and initial scores come from seed and whose masks keep the
// fraction keep of each factor's edges.
func NewMaskedLoRA(sizes []int, base [][]float32, ranks []int, alphas []float64, seed uint64, keep float64) (*MaskedLoRA, error) {
	for l, r := range ranks {
		if r < 1 {
			return nil, fmt.Errorf("model: masked adapter layer %d rank %d, want at least 1", l, r)
		}
	}
	lo, err := NewLoRA(sizes, base, ranks, alphas)
	if err != nil {
		return nil, err
	}
	sm, err := NewSupermaskKeep(AdapterChain(sizes, ranks), seed, keep)
	if err != nil {
		return nil, err
	}
	return &MaskedLoRA{LoRA: lo, Mask: sm}, nil
}

// Params is the number of edges (scores) of the adapters.
func (m *MaskedLoRA) Params() int { return m.Mask.Params() }

// factorsFromChain writes the chain's per-layer effective weights (masked
// constants) into LoRA factors A (r×In) and Bt (r×Out), reusing A and Bt.
func (m *MaskedLoRA) factorsFromChain(eff [][]float32, A, Bt [][]float32) ([][]float32, [][]float32) {
	L := len(m.LoRA.Ranks)
	if len(A) != L {
		A, Bt = make([][]float32, L), make([][]float32, L)
	}
	for l, r := range m.LoRA.Ranks {
		in := m.LoRA.Sizes[l]
		if len(A[l]) != r*in {
			A[l] = make([]float32, r*in)
		}
		a, ea := A[l], eff[2*l]
		for i := range in {
			for j := range r {
				a[j*in+i] = ea[i*r+j]
			}
		}
		Bt[l] = append(Bt[l][:0], eff[2*l+1]...)
	}
	return A, Bt
}

// FactorsFromRanking returns the masked factors (M_A ⊙ A, M_B ⊙ Bt) of the
// model given by per-chain-layer rankings.
func (m *MaskedLoRA) FactorsFromRanking(order [][]uint32) (A, Bt [][]float32, err error) {
	eff, _, err := m.Mask.EffectiveFromRanking(order, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	A, Bt = m.factorsFromChain(eff, nil, nil)
	return A, Bt, nil
}

// EffectiveFromRanking returns the dense effective weights W0 + s·AᵀBt of the
// model given by per-chain-layer rankings, and the first layer's column sums.
func (m *MaskedLoRA) EffectiveFromRanking(order [][]uint32) ([][]float32, []float32, error) {
	A, Bt, err := m.FactorsFromRanking(order)
	if err != nil {
		return nil, nil, err
	}
	return m.LoRA.Effective(A, Bt, nil, nil)
}

// MaskedLoRATrainer trains a masked adapter's scores on one goroutine: the
// factor gradients come from a LoRATrainer run on the masked factors, and
// each score moves by the straight-through gradient dL/ds = dL/dF·c·sign(s)
// (F the masked factor entry, c its frozen constant), as in a supermask
// layer. The masks are re-selected after every step.
type MaskedLoRATrainer struct {
	m      *MaskedLoRA
	lt     *LoRATrainer
	scores [][]float32 // per chain layer
	mom    [][]float32
	thr    []uint32
	scr    []uint32
	mu, wd float32
}

// NewTrainer returns a trainer for batches of at most maxBatch images.
func (m *MaskedLoRA) NewTrainer(maxBatch int) *MaskedLoRATrainer {
	C := len(m.Mask.Layers)
	t := &MaskedLoRATrainer{m: m, lt: m.LoRA.NewTrainer(maxBatch),
		scores: make([][]float32, C), mom: make([][]float32, C), thr: make([]uint32, C)}
	for c := range m.Mask.Layers {
		t.scores[c] = make([]float32, m.Mask.Layers[c].N())
		t.mom[c] = make([]float32, m.Mask.Layers[c].N())
	}
	return t
}

// Load starts a client from a global model given by its per-chain-layer
// rankings; momentum is reset.
func (t *MaskedLoRATrainer) Load(order [][]uint32) error {
	if _, err := t.m.Mask.ScoresFromRanking(order, t.scores); err != nil {
		return err
	}
	eff, _, err := t.m.Mask.EffectiveFromRanking(order, nil, nil)
	if err != nil {
		return err
	}
	A, Bt := t.m.factorsFromChain(eff, nil, nil)
	for c := range t.mom {
		fill(t.mom[c], 0)
		t.thr[c] = t.m.Mask.Layers[c].thr
	}
	return t.lt.Load(A, Bt, true)
}

// Scores returns the current scores per chain layer (aliased; valid until
// the next Load).
func (t *MaskedLoRATrainer) Scores() [][]float32 { return t.scores }

// Factors returns the current masked factors (aliased).
func (t *MaskedLoRATrainer) Factors() (A, Bt [][]float32) { return t.lt.Factors() }

// Train runs local training from the loaded model and returns the mean loss
// of the last epoch.
func (t *MaskedLoRATrainer) Train(in *Inputs, samples []int32, h Hyper, rng *rand.Rand) (float64, error) {
	if in.Dim != t.m.LoRA.Sizes[0] {
		return 0, fmt.Errorf("model: inputs have %d features, network expects %d", in.Dim, t.m.LoRA.Sizes[0])
	}
	if t.lt.ranks == nil {
		return 0, fmt.Errorf("model: masked adapter trainer used before Load")
	}
	t.mu, t.wd = float32(h.Momentum), float32(h.WeightDecay)
	var loss float64
	var err error
	t.lt.order, loss, err = runEpochs(t.lt.e, t, in, samples, h, rng, t.lt.order)
	return loss, err
}

func (t *MaskedLoRATrainer) forward(e *engine, in *Inputs, batch []int32) [][]float32 {
	return t.lt.forward(e, in, batch)
}

// update takes one step on the scores with the factor gradients of the
// batch held by the engine, re-selects the masks and refreshes the factors.
func (t *MaskedLoRATrainer) update(e *engine, B int, offset, lr float32) {
	lt := t.lt
	lt.grads(e, B, offset)
	sizes := t.m.LoRA.Sizes
	for l, r := range lt.ranks {
		in := sizes[l]
		// A: chain edge i*r+j is A[j*in+i].
		ca := 2 * l
		ly := &t.m.Mask.Layers[ca]
		s, m, gA := t.scores[ca], t.mom[ca], lt.gA[l]
		for i := range in {
			for j := range r {
				e := i*r + j
				t.step(s, m, ly.W, e, gA[j*in+i], lr)
			}
		}
		t.thr[ca] = t.threshold(ca)
		thr, a := t.thr[ca], lt.A[l]
		for i := range in {
			for j := range r {
				e := i*r + j
				a[j*in+i] = maskedConst(s[e], ly.W[e], thr)
			}
		}
		// Bt: chain edge k is Bt[k].
		cb := 2*l + 1
		ly = &t.m.Mask.Layers[cb]
		s, m = t.scores[cb], t.mom[cb]
		gB := lt.gB[l]
		for k := range s {
			t.step(s, m, ly.W, k, gB[k], lr)
		}
		t.thr[cb] = t.threshold(cb)
		thr, b := t.thr[cb], lt.Bt[l]
		for k := range s {
			b[k] = maskedConst(s[k], ly.W[k], thr)
		}
		if l > 0 {
			t.m.LoRA.effectiveLayer(l, r, lt.A[l], lt.Bt[l], lt.eff[l])
		}
	}
	t.m.LoRA.effectiveColsum(lt.ranks[0], lt.A[0], lt.Bt[0], lt.colsum)
	lt.stale = true
}

// step is SGD with momentum and weight decay on score e, whose masked
// factor has gradient g: the straight-through gradient g·c·sign(s).
func (t *MaskedLoRATrainer) step(s, m, w []float32, e int, g, lr float32) {
	se := s[e]
	ws := math.Float32frombits(math.Float32bits(w[e]) ^ (math.Float32bits(se) & signBit))
	me := t.mu*m[e] + (g*ws + t.wd*se)
	m[e] = me
	s[e] = se - lr*me
}

// threshold is chain layer c's Keep-th largest |score| bit pattern.
func (t *MaskedLoRATrainer) threshold(c int) uint32 {
	return kthLargestAbs(t.scores[c], t.m.Mask.Layers[c].Keep, &t.scr)
}

// maskedConst is w where |s| is at least the threshold, else 0.
func maskedConst(s, w float32, thr uint32) float32 {
	if math.Float32bits(s)&^signBit >= thr {
		return w
	}
	return 0
}

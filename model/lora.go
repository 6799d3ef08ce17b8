package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Low-rank adapters (LoRA, Hu et al. 2021) on a frozen dense network.
//
// Layer l keeps its base weights W0 (input-major, In×Out, edge e = i*Out + o)
// frozen and learns a rank-r correction:
//
//	W = W0 + s·Aᵀ·Bt,   s = alpha/r
//	W[i*Out+o] = W0[i*Out+o] + s·Σ_j A[j*In+i]·Bt[j*Out+o]
//
// Both factors are stored component-major: A is r×In (row j is component j's
// input direction, exactly PEFT's lora_A.weight [r, in]) and Bt is r×Out (row
// j is component j's output direction: PEFT's lora_B.weight [out, r]
// transposed). Component-major storage keeps every component contiguous, so a
// rank-r' prefix of a rank-r adapter (r' ≤ r) is a prefix of both slices: a
// peer of a smaller rank takes the first r' components of a global adapter.
//
// The scale s of a layer is a property of the network (alpha over the
// network's rank of that layer), not of an adapter: an adapter of a smaller
// rank uses the same s, so that factors of any rank mean the same ΔW and can
// be merged.

// LoRA is a frozen dense network with one adapter slot per layer.
type LoRA struct {
	Sizes  []int
	Base   [][]float32 // W0 per layer, input-major; never written
	Ranks  []int       // the network's rank of each layer (0: the layer is not adapted)
	Scales []float32   // alpha/rank of each layer (0 where the rank is 0)
	// baseColsum is Σ_i W0[0][i,:], the first layer's constant-offset term.
	baseColsum []float32
}

// NewLoRA wraps base weights (shared, not copied: the caller must not change
// them) with adapters of the given per-layer ranks and alphas.
func NewLoRA(sizes []int, base [][]float32, ranks []int, alphas []float64) (*LoRA, error) {
	if err := ValidateSizes(sizes); err != nil {
		return nil, err
	}
	L := len(sizes) - 1
	if len(base) != L || len(ranks) != L || len(alphas) != L {
		return nil, fmt.Errorf("model: LoRA of %d layers got %d base layers, %d ranks, %d alphas", L, len(base), len(ranks), len(alphas))
	}
	n := &LoRA{Sizes: slices.Clone(sizes), Base: base, Ranks: slices.Clone(ranks), Scales: make([]float32, L)}
	for l := range L {
		in, out := sizes[l], sizes[l+1]
		if len(base[l]) != in*out {
			return nil, fmt.Errorf("model: base layer %d has %d weights, want %d×%d", l, len(base[l]), in, out)
		}
		if r := ranks[l]; r < 0 || r > min(in, out) {
			return nil, fmt.Errorf("model: layer %d rank %d out of range 0..%d", l, r, min(in, out))
		}
		if a := alphas[l]; !(a > 0) || math.IsInf(a, 0) {
			return nil, fmt.Errorf("model: layer %d alpha %v must be > 0 and finite", l, a)
		}
		if ranks[l] > 0 {
			n.Scales[l] = float32(alphas[l] / float64(ranks[l]))
		}
	}
	n.baseColsum = ColumnSums(base[0], sizes[0], sizes[1])
	return n, nil
}

// Params is the number of adapter parameters at the network's ranks.
func (n *LoRA) Params() int {
	p := 0
	for l, r := range n.Ranks {
		p += r * (n.Sizes[l] + n.Sizes[l+1])
	}
	return p
}

// InitA draws the A factors of every layer at the network's ranks from seed,
// as PEFT does (kaiming_uniform_ with a = √5, which is U(-1/√In, 1/√In)).
// Every layer has its own stream, so the draw of a layer does not depend on
// the others' ranks, and a rank-r' prefix of layer l is the same for every r ≥ r'.
func (n *LoRA) InitA(seed uint64) [][]float32 {
	out := make([][]float32, len(n.Ranks))
	for l, r := range n.Ranks {
		in := n.Sizes[l]
		rng := rand.New(rand.NewPCG(seed, 0x10aa0000+uint64(l)))
		bound := 1 / math.Sqrt(float64(in))
		a := make([]float32, r*in)
		for k := range a {
			a[k] = float32((2*rng.Float64() - 1) * bound)
		}
		out[l] = a
	}
	return out
}

// checkFactors validates adapter factors against the network and returns
// their rank per layer.
func (n *LoRA) checkFactors(A, Bt [][]float32, ranks []int) ([]int, error) {
	L := len(n.Ranks)
	if len(A) != L || len(Bt) != L {
		return nil, fmt.Errorf("model: adapter of %d A and %d B layers for %d layers", len(A), len(Bt), L)
	}
	ranks = ranks[:0]
	for l := range L {
		in, out := n.Sizes[l], n.Sizes[l+1]
		if len(A[l])%in != 0 {
			return nil, fmt.Errorf("model: layer %d A has %d values, not a multiple of %d inputs", l, len(A[l]), in)
		}
		r := len(A[l]) / in
		if r > n.Ranks[l] {
			return nil, fmt.Errorf("model: layer %d adapter rank %d exceeds the network's %d", l, r, n.Ranks[l])
		}
		if len(Bt[l]) != r*out {
			return nil, fmt.Errorf("model: layer %d B has %d values, want rank %d × %d outputs", l, len(Bt[l]), r, out)
		}
		ranks = append(ranks, r)
	}
	return ranks, nil
}

// Effective returns W0 + s·AᵀBt per layer and the first layer's column sums,
// reusing dst and colsum when they fit. The rank of each layer is read from
// the factors' lengths (at most the network's rank).
func (n *LoRA) Effective(A, Bt [][]float32, dst [][]float32, colsum []float32) ([][]float32, []float32, error) {
	ranks, err := n.checkFactors(A, Bt, nil)
	if err != nil {
		return nil, nil, err
	}
	if len(dst) != len(n.Base) {
		dst = make([][]float32, len(n.Base))
	}
	for l := range n.Base {
		if len(dst[l]) != len(n.Base[l]) {
			dst[l] = make([]float32, len(n.Base[l]))
		}
		n.effectiveLayer(l, ranks[l], A[l], Bt[l], dst[l])
	}
	if len(colsum) != n.Sizes[1] {
		colsum = make([]float32, n.Sizes[1])
	}
	n.effectiveColsum(ranks[0], A[0], Bt[0], colsum)
	return dst, colsum, nil
}

// effectiveLayer writes W0 + s·AᵀBt of layer l into w: r axpys of length Out
// per input row.
func (n *LoRA) effectiveLayer(l, r int, A, Bt, w []float32) {
	in, out := n.Sizes[l], n.Sizes[l+1]
	copy(w, n.Base[l])
	if r == 0 {
		return
	}
	s := n.Scales[l]
	for i := range in {
		row := w[i*out : (i+1)*out]
		for j := range r {
			if a := A[j*in+i]; a != 0 {
				axpy(s*a, Bt[j*out:(j+1)*out], row)
			}
		}
	}
}

// effectiveColsum writes Σ_i W[0][i,:] = colsum(W0) + s·Σ_j (Σ_i A[j,i])·Bt[j,:].
func (n *LoRA) effectiveColsum(r int, A, Bt, colsum []float32) {
	in, out := n.Sizes[0], n.Sizes[1]
	copy(colsum, n.baseColsum)
	s := n.Scales[0]
	for j := range r {
		var sum float32
		for _, a := range A[j*in : (j+1)*in] {
			sum += a
		}
		axpy(s*sum, Bt[j*out:(j+1)*out], colsum)
	}
}

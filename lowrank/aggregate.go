package lowrank

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedrank/fedrank/aggregate"
)

// Registry names of the merges.
const (
	NameAvg = "lora-avg"
	NameFFA = "lora-ffa"
	NameSVD = "lora-svd"
)

// merger is what the three merges share: the spec, the round's global
// factors (updates are differences from them), and the weight seen.
type merger struct {
	spec   Spec
	round  uint64
	global Factors
	began  bool
	n      int
	weight float64
}

func (m *merger) begin(round uint64, global []byte) error {
	f, err := m.spec.DecodeModel(global)
	if err != nil {
		return err
	}
	m.round, m.global, m.began = round, f, true
	m.n, m.weight = 0, 0
	return nil
}

// decode validates an update and returns the peer's factors and weight.
func (m *merger) decode(u aggregate.Update) (Factors, float64, error) {
	if !m.began {
		return Factors{}, 0, errors.New("lowrank: Add before Begin")
	}
	if u.Samples <= 0 {
		return Factors{}, 0, fmt.Errorf("update from %s: sample count %d must be > 0", u.Peer, u.Samples)
	}
	f, err := m.spec.DecodeUpdate(u.Payload, m.global)
	if err != nil {
		return Factors{}, 0, fmt.Errorf("update from %s: %w", u.Peer, err)
	}
	return f, float64(u.Samples), nil
}

// Len implements aggregate.Aggregator.
func (m *merger) Len() int { return m.n }

// Avg averages factors component by component, weighted by sample counts:
// FedIT's merge (lora-avg: A and B separately) or FFA-LoRA's (lora-ffa: B
// only; A is frozen). A component a peer did not train (its rank is smaller)
// counts as zero, as it was in the peer's model. Streaming: one float64
// accumulator per factor value.
//
// For FedIT the result is not the average of the peers' ΔW: with p_k
// normalised to sum to 1, Ā = Σ_k p_k A_k and B̄ = Σ_k p_k B_k,
//
//	Σ_k p_k A_kᵀB_k − ĀᵀB̄ = Σ_k p_k (A_k − Ā)ᵀ(B_k − B̄)
//
// (the cross terms), which is zero only when the peers agree on A or on B.
// FFA-LoRA's A is the same for every peer, so its merge is exact.
type Avg struct {
	merger
	name       string
	sumA, sumB [][]float64
}

// NewAvg returns the FedIT merge ("lora-avg") for a spec whose A travels.
func NewAvg(spec Spec) (*Avg, error) {
	if spec.FrozenA {
		return nil, errors.New("lowrank: lora-avg needs a spec whose A travels (FrozenA false)")
	}
	return newAvg(spec, NameAvg)
}

// NewFFA returns the FFA-LoRA merge ("lora-ffa") for a spec with a frozen A.
func NewFFA(spec Spec) (*Avg, error) {
	if !spec.FrozenA {
		return nil, errors.New("lowrank: lora-ffa needs a spec with a frozen A (FrozenA true)")
	}
	return newAvg(spec, NameFFA)
}

func newAvg(spec Spec, name string) (*Avg, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	a := &Avg{merger: merger{spec: spec.clone()}, name: name}
	for _, ly := range spec.Layers {
		if !spec.FrozenA {
			a.sumA = append(a.sumA, make([]float64, ly.Rank*ly.In))
		}
		a.sumB = append(a.sumB, make([]float64, ly.Rank*ly.Out))
	}
	return a, nil
}

// Name implements aggregate.Aggregator.
func (a *Avg) Name() string { return a.name }

// Begin implements aggregate.Aggregator.
func (a *Avg) Begin(round uint64, global []byte) error {
	if err := a.begin(round, global); err != nil {
		return err
	}
	for l := range a.sumB {
		if a.sumA != nil {
			clear(a.sumA[l])
		}
		clear(a.sumB[l])
	}
	return nil
}

// Add implements aggregate.Aggregator.
func (a *Avg) Add(u aggregate.Update) error {
	f, p, err := a.decode(u)
	if err != nil {
		return err
	}
	for l := range f.B {
		if f.A != nil {
			s := a.sumA[l]
			for i, v := range f.A[l] {
				s[i] += p * float64(v)
			}
		}
		s := a.sumB[l]
		for i, v := range f.B[l] {
			s[i] += p * float64(v)
		}
	}
	a.weight += p
	a.n++
	return nil
}

// Finalize implements aggregate.Aggregator: the averaged factors, fp32.
func (a *Avg) Finalize() ([]byte, error) {
	if a.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	inv := 1 / a.weight
	f := Factors{B: make([][]float32, len(a.sumB))}
	if a.sumA != nil {
		f.A = make([][]float32, len(a.sumA))
		for l, s := range a.sumA {
			f.A[l] = scaled32(s, inv)
		}
	}
	for l, s := range a.sumB {
		f.B[l] = scaled32(s, inv)
	}
	return a.spec.EncodeModel(f, FP32)
}

func scaled32(s []float64, c float64) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = float32(v * c)
	}
	return out
}

// SVD is the exact merge ("lora-svd"): per layer it forms
// M = Σ_k p_k A_kᵀB_k / Σ_k p_k (the sample-weighted average of the peers'
// ΔW/s, each at its own rank) and factors it back to the federation's rank
// with MergeSVD: the best approximation of that rank, components by
// descending singular value, so that a peer of a smaller rank r' that takes
// the first r' components gets the best rank-r' approximation. The energy
// truncation dropped is kept per layer (Residuals).
//
// Components of a zero singular value (the sum has a smaller rank than the
// federation's) would never learn again (the gradient of each factor is
// proportional to the other); they are re-seeded as a fresh adapter
// component, A random (kaiming-uniform, from the spec's seed, the round and
// the layer) and B zero, which leaves ΔW unchanged.
type SVD struct {
	merger
	opts    SVDOptions
	terms   [][]Term
	last    []Residual
	methods []Method
}

// NewSVD returns the exact merge for a spec whose A travels.
func NewSVD(spec Spec, opts SVDOptions) (*SVD, error) {
	if spec.FrozenA {
		return nil, errors.New("lowrank: lora-svd needs a spec whose A travels (FrozenA false)")
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &SVD{merger: merger{spec: spec.clone()}, opts: opts, terms: make([][]Term, len(spec.Layers))}, nil
}

// Name implements aggregate.Aggregator.
func (s *SVD) Name() string { return NameSVD }

// Begin implements aggregate.Aggregator.
func (s *SVD) Begin(round uint64, global []byte) error {
	if err := s.begin(round, global); err != nil {
		return err
	}
	for l := range s.terms {
		s.terms[l] = s.terms[l][:0]
	}
	return nil
}

// Add implements aggregate.Aggregator. It keeps the update's factors (Σr_k
// components per layer); the merge itself runs in Finalize.
func (s *SVD) Add(u aggregate.Update) error {
	f, p, err := s.decode(u)
	if err != nil {
		return err
	}
	for l := range f.B {
		s.terms[l] = append(s.terms[l], Term{P: p, A: to64(f.A[l]), B: to64(f.B[l])})
	}
	s.weight += p
	s.n++
	return nil
}

func to64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// Finalize implements aggregate.Aggregator: the merged factors, fp32.
func (s *SVD) Finalize() ([]byte, error) {
	if s.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	L := len(s.spec.Layers)
	f := Factors{A: make([][]float32, L), B: make([][]float32, L)}
	s.last = make([]Residual, L)
	s.methods = make([]Method, L)
	for l := range s.spec.Layers {
		var err error
		f.A[l], f.B[l], s.last[l], s.methods[l], err = factorBack(s.spec, s.round, l, s.terms[l], s.opts)
		if err != nil {
			return nil, err
		}
	}
	return s.spec.EncodeModel(f, FP32)
}

// factorBack is the last step of lora-svd and lora-median: the best rank-R
// factors (MergeSVD) of layer l's M = Σ_k p_k A_kᵀB_k / Σ_k p_k, in fp32,
// with the components of a zero singular value re-seeded as fresh adapter
// components (A kaiming-uniform from the spec's seed, the round and the
// layer; B zero, so ΔW is unchanged).
func factorBack(spec Spec, round uint64, l int, terms []Term, opts SVDOptions) (A32, B32 []float32, res Residual, m Method, err error) {
	ly := spec.Layers[l]
	opts.Seed = spec.Seed ^ round<<8 ^ uint64(l)
	A, B, dead, res, m, err := MergeSVD(ly.In, ly.Out, ly.Rank, terms, opts)
	if err != nil {
		return nil, nil, res, m, fmt.Errorf("lowrank: layer %d: %w", l, err)
	}
	A32, B32 = make([]float32, len(A)), make([]float32, len(B))
	for i, v := range A {
		A32[i] = float32(v)
	}
	for i, v := range B {
		B32[i] = float32(v)
	}
	rng := rand.New(rand.NewPCG(spec.Seed^0x5eed, round<<8|uint64(l)))
	bound := 1 / math.Sqrt(float64(ly.In))
	for j, d := range dead {
		if !d {
			continue
		}
		a := A32[j*ly.In : (j+1)*ly.In]
		for i := range a {
			a[i] = float32((2*rng.Float64() - 1) * bound)
		}
		clear(B32[j*ly.Out : (j+1)*ly.Out])
	}
	return A32, B32, res, m, nil
}

// Residuals returns, per layer, the energy the last Finalize dropped by
// truncating to the federation's rank (nil before the first Finalize).
func (s *SVD) Residuals() []Residual { return s.last }

// Methods returns, per layer, the factorization the last Finalize used.
func (s *SVD) Methods() []Method { return s.methods }

// DroppedFraction is the energy the last Finalize dropped over all layers,
// as a fraction of the merged ΔW/s energy.
func (s *SVD) DroppedFraction() float64 {
	var r Residual
	for _, x := range s.last {
		r.Dropped += x.Dropped
		r.Total += x.Total
	}
	return r.Fraction()
}

// RoundMetrics reports the last Finalize's truncation as named values for a
// round report: "svd_dropped" over all layers and "svd_dropped_l{l}" per
// layer, each a fraction of the merged energy (nil before a Finalize).
func (s *SVD) RoundMetrics() map[string]float64 {
	if s.last == nil {
		return nil
	}
	m := map[string]float64{"svd_dropped": s.DroppedFraction()}
	for l, r := range s.last {
		m[fmt.Sprintf("svd_dropped_l%d", l)] = r.Fraction()
	}
	return m
}

var (
	_ aggregate.Aggregator = (*Avg)(nil)
	_ aggregate.Aggregator = (*SVD)(nil)
)

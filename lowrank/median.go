package lowrank

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fedrank/fedrank/aggregate"
	"gonum.org/v1/gonum/mat"
)

// NameMedian is the registry name of the robust merge.
const NameMedian = "lora-median"

// Median is the robust merge ("lora-median"): per layer, the coordinate-wise
// median (Yin et al. 2018) of the peers' products A_kᵀB_k (each peer's ΔW/s
// at its own rank, so heterogeneous ranks need nothing else), factored back
// to the federation's rank exactly as lora-svd factors its average
// (MergeSVD, then the same re-seeding of dead components; SVD.Residuals'
// truncation energy is reported the same way).
//
// Why the products and not the factors: a coordinate-wise statistic is only
// meaningful where a coordinate means the same thing for every peer. The
// factors of a LoRA adapter are not aligned across peers: A_kᵀB_k =
// (G A_k)ᵀ(G⁻ᵀB_k) for any invertible r×r G, so the same ΔW has many
// factorizations, and after a round of local training from the same global
// factors each peer's components drift in its own directions (and lora-svd's
// merge may reorder and re-sign them from round to round). A median of A and
// of B separately is then a median of incomparable numbers, and the product
// of two medians is not a median of anything (it is not even bounded by the
// peers' products: a peer can keep its product while scaling A up and B
// down). The product ΔW/s is what the peers agree on the meaning of, entry
// by entry, so its median has the usual guarantee: with fewer than half of a
// round's updates from attackers, every entry of the median lies between the
// smallest and the largest honest value of that entry, whatever the
// attackers send. (With a frozen, shared A, as in lora-ffa, B would be
// aligned, and a median of B would be sound; lora-median is built for
// federations whose A travels, as lora-svd's and lora-avg's.)
//
// The truncation back to rank R is the one lossy step: the median of
// products has, in general, full rank, and its best rank-R approximation may
// leave the honest range by what truncation drops (reported per layer).
//
// Sample counts are not used: a weighted median would let a peer that
// claims many samples move the merge alone. An even number of updates takes
// the mean of the two middle values. Memory: the round's factors (as
// lora-svd keeps them), and in Finalize one In×Out product per update of the
// layer being merged.
type Median struct {
	merger
	opts    SVDOptions
	terms   [][]Term
	last    []Residual
	methods []Method
}

// NewMedian returns the robust merge for a spec whose A travels. opts tunes
// the factorization back to the federation's rank, as lora-svd's.
func NewMedian(spec Spec, opts SVDOptions) (*Median, error) {
	if spec.FrozenA {
		return nil, errors.New("lowrank: lora-median needs a spec whose A travels (FrozenA false)")
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &Median{merger: merger{spec: spec.clone()}, opts: opts, terms: make([][]Term, len(spec.Layers))}, nil
}

// Name implements aggregate.Aggregator.
func (m *Median) Name() string { return NameMedian }

// Begin implements aggregate.Aggregator.
func (m *Median) Begin(round uint64, global []byte) error {
	if err := m.begin(round, global); err != nil {
		return err
	}
	for l := range m.terms {
		m.terms[l] = m.terms[l][:0]
	}
	return nil
}

// Add implements aggregate.Aggregator: it validates the update and keeps its
// factors; the merge runs in Finalize.
func (m *Median) Add(u aggregate.Update) error {
	f, p, err := m.decode(u)
	if err != nil {
		return err
	}
	for l := range f.B {
		m.terms[l] = append(m.terms[l], Term{P: 1, A: to64(f.A[l]), B: to64(f.B[l])})
	}
	m.weight += p
	m.n++
	return nil
}

// Finalize implements aggregate.Aggregator: the merged factors, fp32.
func (m *Median) Finalize() ([]byte, error) {
	if m.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	L := len(m.spec.Layers)
	f := Factors{A: make([][]float32, L), B: make([][]float32, L)}
	m.last = make([]Residual, L)
	m.methods = make([]Method, L)
	for l, ly := range m.spec.Layers {
		med := medianProduct(ly.In, ly.Out, m.terms[l])
		opts := m.opts
		if opts.Method == Auto {
			// The median has full rank in general, so MergeSVD's Auto
			// would take the factored path with Σr = min(In, Out): the SVD
			// of a min(In, Out)² core, slower than a dense SVD of M. Choose
			// as Auto does for a sum of a large stacked rank.
			if ly.Rank+opts.withDefaults().Oversample <= min(ly.In, ly.Out)/4 {
				opts.Method = Randomized
			} else {
				opts.Method = Dense
			}
		}
		var err error
		f.A[l], f.B[l], m.last[l], m.methods[l], err = factorBack(m.spec, m.round, l, []Term{denseTerm(ly.In, ly.Out, med)}, opts)
		if err != nil {
			return nil, err
		}
	}
	return m.spec.EncodeModel(f, FP32)
}

// medianProduct returns the coordinate-wise median of the terms' products
// A_kᵀB_k (In×Out, input-major), ignoring their weights. The terms must fit
// the layer (as MergeSVD checks); none gives zeros.
func medianProduct(in, out int, terms []Term) []float64 {
	med := make([]float64, in*out)
	k := len(terms)
	if k == 0 {
		return med
	}
	prods := make([][]float64, k)
	for t, term := range terms {
		r := len(term.B) / out
		prods[t] = make([]float64, in*out)
		if r == 0 {
			continue
		}
		// A_kᵀB_k: A is r×In and B r×Out, component-major.
		a := mat.NewDense(r, in, term.A)
		b := mat.NewDense(r, out, term.B)
		p := mat.NewDense(in, out, prods[t])
		p.Mul(a.T(), b)
	}
	buf := make([]float64, k)
	for c := range med {
		for t := range prods {
			buf[t] = prods[t][c]
		}
		med[c] = median(buf)
	}
	return med
}

// median returns the median of x (reordered), the mean of the two middle
// values for an even length.
func median(x []float64) float64 {
	slices.Sort(x)
	n := len(x)
	if n%2 == 1 {
		return x[n/2]
	}
	return x[n/2-1]/2 + x[n/2]/2
}

// denseTerm writes an In×Out matrix M (input-major) as one term whose
// product is M, of min(In, Out) components: B the identity and A the
// columns of M when In ≥ Out, else A the identity and B the rows of M.
func denseTerm(in, out int, M []float64) Term {
	if in >= out {
		A, B := make([]float64, out*in), make([]float64, out*out)
		for j := range out {
			B[j*out+j] = 1
			for i := range in {
				A[j*in+i] = M[i*out+j]
			}
		}
		return Term{P: 1, A: A, B: B}
	}
	A := make([]float64, in*in)
	for j := range in {
		A[j*in+j] = 1
	}
	return Term{P: 1, A: A, B: slices.Clone(M)}
}

// Residuals returns, per layer, the energy the last Finalize dropped by
// truncating the median to the federation's rank (nil before the first).
func (m *Median) Residuals() []Residual { return m.last }

// Methods returns, per layer, the factorization the last Finalize used.
func (m *Median) Methods() []Method { return m.methods }

// DroppedFraction is the energy the last Finalize's truncation dropped over
// all layers, as a fraction of the median's energy.
func (m *Median) DroppedFraction() float64 {
	var r Residual
	for _, x := range m.last {
		r.Dropped += x.Dropped
		r.Total += x.Total
	}
	return r.Fraction()
}

// RoundMetrics reports the last Finalize's truncation as lora-svd's does:
// "svd_dropped" over all layers and "svd_dropped_l{l}" per layer (nil before
// a Finalize).
func (m *Median) RoundMetrics() map[string]float64 {
	if m.last == nil {
		return nil
	}
	out := map[string]float64{"svd_dropped": m.DroppedFraction()}
	for l, r := range m.last {
		out[fmt.Sprintf("svd_dropped_l%d", l)] = r.Fraction()
	}
	return out
}

var _ aggregate.Aggregator = (*Median)(nil)

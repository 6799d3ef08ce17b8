package rankvote

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// SignVote counts only the direction in which each voter moved each edge
// from the previous global ranking, so that no voter's say over an edge
// depends on how far it moves it. It starts as FilteredVote: voters whose
// distance to the median-position consensus is an outlier are dropped whole.
// Over the kk kept voters, with g(e) the edge's position in the previous
// ranking and S(e) the sum over them of sign(position - g(e)) (+1 further
// up, -1 further down, 0 in place), an edge's aggregate position is
//
//	a(e) = g(e) + eta × S(e) / kk,
//
// and the result orders the edges by it (ties by median position over the
// kept voters, then by edge index). The step eta of a layer is the radius
// ClampedVote would use: Alpha times the median over the kept voters of
// their mean distance |position - median position| (rounded up, at least
// 1): an edge that every voter moves goes as far as a typical voter moves
// one, alpha = 3.
//
// The bound: whatever m of the kk kept voters send, they add at most m to
// or take at most m from S(e), so every edge's aggregate position stays
// within eta × m / kk of the one in which they had left it in place:
//
//	|a(e) - (g(e) + eta × S_h(e) / kk)| <= eta × m / kk,
//
// S_h(e) being the others' sum; eta is a median over the kept voters, which
// a coalition below half of them cannot take past the others' order
// statistics. For 5 of 25: a fifth of eta, on every edge at once, and no
// more on any. TestSignVoteBound checks it.
//
// What it costs and what it does not stop: the vote ignores how far honest
// voters move an edge, so it learns more slowly than a Borda count; and a
// coalition still decides every edge whose honest voters split within its
// margin. BENCHMARKS.md (issue 9) has both, measured.
//
// A SignVote is not safe for concurrent use.
type SignVote struct {
	fv     *FilteredVote
	alpha  float64
	prev   [][]uint32 // the previous ranking of every layer; nil: the identity
	radius []uint32   // per layer, of the last Result: eta
	steps  [][]int32  // per layer, per edge: the last Result's S(e)
	gpos   [][]uint32 // per layer, per edge: g(e) in the last Result
	count  []uint32
	mid2   []uint64
	disp   []float64
	keys   []uint64
	kept   int
	sorter Sorter
}

// NewSignVote returns an empty sign vote over layers of the given sizes
// with step alpha × the median voter's mean distance from the median
// positions. It panics if alpha is not positive and finite, or a size is
// outside 0..MaxSize.
func NewSignVote(sizes []int, alpha float64) *SignVote {
	if !(alpha > 0) || math.IsInf(alpha, 1) {
		panic(fmt.Sprintf("rankvote: NewSignVote: alpha %v, want a positive number", alpha))
	}
	return &SignVote{fv: NewFilteredVote(sizes), alpha: alpha, radius: make([]uint32, len(sizes)),
		steps: make([][]int32, len(sizes)), gpos: make([][]uint32, len(sizes))}
}

// SetPrevious sets the ranking (one per layer) the voters moved from,
// typically the global ranking they trained from; nil means the identity.
// The vote keeps a reference to prev until the next SetPrevious. It returns
// an error, and changes nothing, when prev has the wrong number of layers or
// a layer is not a permutation of its size.
func (v *SignVote) SetPrevious(prev [][]uint32) error {
	if prev == nil {
		v.prev = nil
		return nil
	}
	sizes := v.fv.med.sizes
	if len(prev) != len(sizes) {
		return fmt.Errorf("%w: got %d, want %d", ErrLayerCount, len(prev), len(sizes))
	}
	var check Validator
	for l, r := range prev {
		if err := check.check(r, sizes[l]); err != nil {
			err.Layer = l
			return err
		}
	}
	v.prev = prev
	return nil
}

// Reset empties the vote for a new round, keeping its memory and the
// previous ranking.
func (v *SignVote) Reset() { v.fv.Reset() }

// Voters is the number of voters added since the last Reset.
func (v *SignVote) Voters() int { return v.fv.Voters() }

// Add counts one voter, as TrimmedVote.Add: on error the vote is unchanged.
func (v *SignVote) Add(layers [][]uint32) error { return v.fv.Add(layers) }

// Kept reports, for each voter in the order of Add, whether the last Result
// counted it.
func (v *SignVote) Kept() []bool { return v.fv.Kept() }

// Radius returns the step eta of every layer in the last Result.
func (v *SignVote) Radius() []uint32 { return slices.Clone(v.radius) }

// Positions returns, per edge of the layer, its aggregate position a(e) in
// the last Result.
func (v *SignVote) Positions(layer int) []float64 {
	eta, kk := int64(v.radius[layer]), int64(max(v.kept, 1))
	out := make([]float64, len(v.steps[layer]))
	for e, s := range v.steps[layer] {
		// One division of the exact numerator, so that equal keys give
		// equal positions.
		out[e] = float64(kk*int64(v.gpos[layer][e])+eta*int64(s)) / float64(kk)
	}
	return out
}

// Result writes into orders (as FilteredVote.Result) the global ranking of
// every layer: its edges by ascending aggregate position, ties by median
// position over the kept voters, then by edge index. With no voters every
// layer is the identity.
func (v *SignVote) Result(orders [][]uint32) [][]uint32 {
	m := v.fv.med
	k := m.voters
	if len(orders) != len(m.sizes) {
		orders = make([][]uint32, len(m.sizes))
	}
	v.fv.filter(nil)
	var kept [][]uint32
	for j, r := range m.ranks[:k] {
		if v.fv.kept[j] {
			kept = append(kept, r)
		}
	}
	v.kept = len(kept)
	kk := uint64(len(kept))
	for l, n := range m.sizes {
		off := m.offs[l]
		v.steps[l] = grow(v.steps[l], n)
		v.gpos[l] = growUint32(v.gpos[l], n)
		g := v.gpos[l]
		if v.prev == nil {
			identity(g)
		} else {
			for p, e := range v.prev[l] {
				g[e] = uint32(p)
			}
		}
		if len(kept) == 0 || n < 2 {
			clear(v.steps[l])
			v.radius[l] = 0
			orders[l] = identity(growUint32(orders[l], n))
			continue
		}
		rows := make([][]uint32, len(kept))
		for j, r := range kept {
			rows[j] = r[off : off+n]
		}
		eta := v.medianLayer(rows)
		v.radius[l] = eta
		s := v.steps[l]
		clear(s)
		for _, r := range rows {
			for p, e := range r {
				switch {
				case uint32(p) > g[e]:
					s[e]++
				case uint32(p) < g[e]:
					s[e]--
				}
			}
		}
		// key = kk*g + eta*(S+kk), at most kk*(n-1) + 2*kk*(n-1) < 3kk*n;
		// then *2n + mid2 (mid2 < 2n) when that fits in 64 bits.
		v.keys = growUint64(v.keys, n)
		keys := v.keys
		for e := range keys {
			keys[e] = kk*uint64(g[e]) + uint64(eta)*uint64(int64(s[e])+int64(kk))
		}
		if hi, _ := bits.Mul64(3*kk*uint64(n), 2*uint64(n)); hi == 0 {
			for e := range keys {
				keys[e] = keys[e]*2*uint64(n) + v.mid2[e]
			}
		}
		orders[l] = v.sorter.ArgsortUint64(keys, growUint32(orders[l], n))
	}
	return orders
}

// medianLayer computes twice every edge's median position over rows into
// v.mid2 and returns the layer's step: ClampRadius of the rows' mean
// distances from it.
func (v *SignVote) medianLayer(rows [][]uint32) uint32 {
	n, kk := len(rows[0]), len(rows)
	if cap(v.count) < n {
		v.count = make([]uint32, n)
		v.mid2 = make([]uint64, n)
	}
	count, mid2 := v.count[:n], v.mid2[:n]
	clear(count)
	clear(mid2)
	loMid, hiMid := uint32((kk+1)/2), uint32(kk/2+1)
	for p := range n {
		for _, r := range rows {
			e := r[p]
			count[e]++
			if count[e] == loMid {
				mid2[e] += uint64(p)
			}
			if count[e] == hiMid {
				mid2[e] += uint64(p)
			}
		}
	}
	v.disp = v.disp[:0]
	for _, r := range rows {
		var d uint64
		for p, e := range r {
			d += absDiff(2*uint64(p), mid2[e])
		}
		v.disp = append(v.disp, float64(d)/float64(2*n))
	}
	return ClampRadius(v.disp, v.alpha, n)
}

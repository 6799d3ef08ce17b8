package rankvote

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// TrimmedVote is a robust variant of the Borda count (Vote). Per edge it takes
// the positions the voters gave it, drops the trim lowest and the trim highest,
// and sums the rest; Result orders a layer's edges by that trimmed sum, equal
// trimmed sums by the full Borda sum, then by edge index. trim is
// floor(frac × voters), capped at (voters-1)/2 so that the middle position (the
// middle two, for an even count) is always kept: frac 0 is the plain Borda
// count (Result equals Vote's) and frac 0.5 orders edges by median position.
//
// Why: in a Borda count every voter moves every edge's sum by up to n-1
// positions. FRL's rank-reversal attackers all send one reversed ranking, so a
// minority of them pushes each edge a long way, and always the same way. With
// the extremes trimmed, a minority of at most trim voters is dropped outright,
// and a larger one shifts an edge only by a few order statistics of the honest
// positions.
//
// Memory: not streaming. The order statistics of an edge need every voter's
// ranking until the round ends: 4 bytes per edge per voter (26.6 MB for 25
// voters on the 266,200-edge MNIST model, 106.5 MB for 100), kept across Reset
// for reuse, plus 40 bytes per edge of the largest layer for Result's
// counters, keys and Sorter.
//
// Result sorts nothing per edge: it sweeps positions 0, 1, ... of all the
// voters' rankings together, counting how many voters have placed each edge
// so far; the position at which an edge is placed for the c-th time is its
// c-th smallest position, kept in the trimmed sum when trim < c <= voters-trim.
// That is O(voters × edges), one pass over the rankings.
//
// A TrimmedVote is not safe for concurrent use.
type TrimmedVote struct {
	sizes  []int
	offs   []int // offset of each layer in a voter's rankings
	total  int
	frac   float64
	ranks  [][]uint32 // ranks[v]: voter v's ranking of every layer, one after the other
	voters int
	check  Validator
	acc    []edgeAcc
	keys   []uint64
	sorter Sorter
	// workers splits Result over goroutines (0: GOMAXPROCS); the rest is
	// Result's scratch.
	workers int
	sweep   rankSweep
	rows    [][]uint32
	wt      []uint32
}

// edgeAcc is what Result's sweep keeps per edge, in one cache line access.
type edgeAcc struct {
	full, trimmed uint64 // sums of all and of the middle positions
	count         uint32 // the voters that placed the edge so far
}

// NewTrimmedVote returns an empty trimmed vote over layers of the given sizes
// that trims the fraction frac of the voters at each end. It panics if frac is
// outside [0, 0.5] or a size is outside 0..MaxSize.
func NewTrimmedVote(sizes []int, frac float64) *TrimmedVote {
	if !(frac >= 0 && frac <= 0.5) {
		panic(fmt.Sprintf("rankvote: NewTrimmedVote: trim fraction %v outside [0, 0.5]", frac))
	}
	v := &TrimmedVote{sizes: slices.Clone(sizes), offs: make([]int, len(sizes)), frac: frac}
	for l, n := range sizes {
		checkSize(n)
		v.offs[l] = v.total
		v.total += n
	}
	return v
}

// Reset empties the vote for a new round, keeping its memory.
func (v *TrimmedVote) Reset() { v.voters = 0 }

// SetWorkers sets the number of goroutines Result uses (0, the default:
// GOMAXPROCS). The result does not depend on it.
func (v *TrimmedVote) SetWorkers(n int) { v.workers = n }

// Voters is the number of voters added since the last Reset.
func (v *TrimmedVote) Voters() int { return v.voters }

// Layers is the number of layers.
func (v *TrimmedVote) Layers() int { return len(v.sizes) }

// Trim is the number of positions Result drops at each end of an edge's
// sorted positions with the current voters.
func (v *TrimmedVote) Trim() int { return TrimCount(v.voters, v.frac) }

// TrimCount is how many of k sorted values a trimmed statistic with trim
// fraction frac drops at each end: floor(frac × k), at most (k-1)/2, so that
// at least one value (two, when k is even) remains. 0 when k <= 0.
func TrimCount(k int, frac float64) int {
	if k <= 0 {
		return 0
	}
	// The epsilon keeps 0.2 × 25 at 5 despite binary fractions.
	t := int(math.Floor(frac*float64(k) + 1e-9))
	return min(max(t, 0), (k-1)/2)
}

// Add counts one voter: layers[l] is its ranking of layer l, the layer's edge
// indices ascending by score. Every layer must be a permutation of 0..n-1;
// otherwise Add returns ErrLayerCount (wrapped) or an *InvalidRankingError
// naming the layer, and the vote is exactly as before. Add keeps no reference
// to layers.
func (v *TrimmedVote) Add(layers [][]uint32) error {
	if len(layers) != len(v.sizes) {
		return fmt.Errorf("%w: got %d, want %d", ErrLayerCount, len(layers), len(v.sizes))
	}
	for l, r := range layers {
		if err := v.check.check(r, v.sizes[l]); err != nil {
			err.Layer = l
			return err
		}
	}
	if v.voters == len(v.ranks) {
		v.ranks = append(v.ranks, make([]uint32, v.total))
	}
	for l, r := range layers {
		copy(v.ranks[v.voters][v.offs[l]:], r)
	}
	v.voters++
	return nil
}

// Result writes into order (resized to the layer's size, allocated if short)
// the global ranking of a layer: its edges by ascending trimmed position sum,
// then by ascending full sum, then by ascending edge index. With no voters it
// is the identity. (When trimmed sum and full sum cannot share one 64-bit key,
// which takes more than about 4 billion voter-edges squared, the full-sum tie
// break is skipped.)
func (v *TrimmedVote) Result(layer int, order []uint32) []uint32 {
	n, k := v.sizes[layer], v.voters
	if k == 0 || n < 2 {
		return identity(growUint32(order, n))
	}
	trim := v.Trim()
	lo, hi := uint32(trim), uint32(k-trim)
	off := v.offs[layer]
	ranks := v.ranks[:k]
	// key = trimmed*span + full, full < span; it fits when (maxTrimmed+1)*span does.
	span := uint64(k)*uint64(n-1) + 1
	over, _ := bits.Mul64(uint64(k-2*trim)*uint64(n-1)+1, span)
	key := func(a edgeAcc) uint64 {
		if over == 0 {
			return a.trimmed*span + a.full
		}
		return a.trimmed
	}
	if cap(v.acc) < n {
		v.acc = make([]edgeAcc, n)
	}
	acc := v.acc[:n]
	v.rows = grow(v.rows, k)
	for j, r := range ranks {
		v.rows[j] = r[off : off+n]
	}
	// The positions ranked lo+1..hi are kept.
	v.wt = grow(v.wt, k+1)
	for c := range v.wt {
		v.wt[c] = 0
		if uint32(c) > lo && uint32(c) <= hi {
			v.wt[c] = 1
		}
	}
	v.sweep.run(workParts(v.workers, n, k), v.rows, v.wt, acc)
	v.keys = growUint64(v.keys, n)
	keys := v.keys
	for e, a := range acc {
		keys[e] = key(a)
	}
	return v.sorter.ArgsortUint64(keys, order)
}

// FilteredVote is a Borda count (Vote) over the voters that are not outliers.
// Result first orders every layer by median position (TrimmedVote with frac
// 0.5), a consensus that a minority cannot move far; then measures each
// voter's distance to it, drops the voters whose distance is an outlier, and
// returns the plain Borda count of the rest.
//
// The distance of a voter is, per layer, the Spearman footrule distance
// between its ranking and the consensus (the sum over edges of the difference
// of positions) divided by its maximum, floor(n²/2), and averaged over the
// layers of at least 2 edges: 0 for the consensus itself, about 2/3 for a
// random ranking, about 1 for its reverse. An outlier lies above median +
// HampelK × MAD of the round's distances (the Hampel identifier; MAD is the
// median absolute deviation from the median), so a voter at the median
// distance or below is always counted, and so is every voter when all are
// equally far.
//
// Why: honest FRL peers start from the global ranking and move it a little
// (distances of about 0.03 to 0.2 on MNIST), while rank-reversal attackers sit
// near 1 and random rankings near 2/3, so they are dropped whole, and the
// vote keeps the statistical efficiency of Borda over the honest voters (a
// median-position vote loses some: see BENCHMARKS.md). With no outlier, the
// result is exactly Vote's. The limit: an attacker whose ranking is about as
// close to the consensus as an honest one is kept. Label flippers train
// honestly on wrong labels and land just beyond the honest distances, so most
// are dropped, but a round in which they are many (a third of it or more)
// moves the consensus and keeps them; an attacker that knows the rule can
// always stay under the limit.
//
// Memory: not streaming, as TrimmedVote (4 bytes per edge per voter), plus a
// Vote (4 bytes per edge) and 8 bytes per edge of the largest layer for the
// consensus.
//
// A FilteredVote is not safe for concurrent use.
type FilteredVote struct {
	med   *TrimmedVote // every voter's rankings, and the median consensus
	borda *Vote        // the count of the kept voters
	cons  []uint32     // consensus order of one layer
	cpos  []uint32     // consensus positions of one layer
	dist  []float64
	limit float64
	kept  []bool
	// Result's scratch: the kept voters' rankings, every voter's footrule
	// of one layer, the Borda counts of the parts but the first, and each
	// part's views of one voter's layers.
	keptRanks [][]uint32
	foot      []uint64
	parts     []*Vote
	layersOf  [][][]uint32
}

// HampelK is FilteredVote's outlier threshold in MADs: 2 standard deviations
// of a normal distribution (1.4826 MAD each). Honest distances are skewed to
// the right, and peers that train on flipped labels sit just beyond them: on
// MNIST with 20% label flippers, 2 deviations end at 0.918 where the
// classical 3 end at 0.833, and cost nothing without attack (BENCHMARKS.md).
const HampelK = 2 * 1.4826

// NewFilteredVote returns an empty filtered vote over layers of the given
// sizes. It panics if a size is outside 0..MaxSize.
func NewFilteredVote(sizes []int) *FilteredVote {
	return &FilteredVote{med: NewTrimmedVote(sizes, 0.5), borda: NewVote(sizes)}
}

// Reset empties the vote for a new round, keeping its memory.
func (v *FilteredVote) Reset() { v.med.Reset() }

// SetWorkers sets the number of goroutines Result and Filter use (0, the
// default: GOMAXPROCS). The result does not depend on it.
func (v *FilteredVote) SetWorkers(n int) { v.med.SetWorkers(n) }

// Voters is the number of voters added since the last Reset.
func (v *FilteredVote) Voters() int { return v.med.Voters() }

// Add counts one voter, as TrimmedVote.Add: on error the vote is unchanged.
func (v *FilteredVote) Add(layers [][]uint32) error { return v.med.Add(layers) }

// Distances returns the distance of each voter (in the order of Add) to the
// consensus, as computed by the last Result (or Filter).
func (v *FilteredVote) Distances() []float64 { return slices.Clone(v.dist) }

// Kept reports, for each voter in the order of Add, whether the last Result
// counted it (or Filter would have).
func (v *FilteredVote) Kept() []bool { return slices.Clone(v.kept) }

// Limit is the largest distance the last Result (or Filter) kept:
// HampelLimit of Distances.
func (v *FilteredVote) Limit() float64 { return v.limit }

// Result writes into orders (one ranking per layer, each resized to its
// layer's size and allocated if short; orders itself is allocated if its
// length is not the number of layers) the global ranking of every layer: its
// edges by ascending sum of the positions the kept voters gave them, equal
// sums by ascending edge index. The filtering looks at all layers at once, so
// they are computed together. With no voters every layer is the identity.
func (v *FilteredVote) Result(orders [][]uint32) [][]uint32 {
	m := v.med
	k := m.voters
	if len(orders) != len(m.sizes) {
		orders = make([][]uint32, len(m.sizes))
	}
	v.filter(nil)
	// The Borda count of the kept voters, split by voters into parts whose
	// sums (integers) are merged in order.
	v.keptRanks = v.keptRanks[:0]
	for j, r := range m.ranks[:k] {
		if v.kept[j] {
			v.keptRanks = append(v.keptRanks, r)
		}
	}
	parts := 1
	if m.total >= minParallel {
		parts = min(resolveWorkers(m.workers), len(v.keptRanks))
	}
	for len(v.parts) < parts-1 {
		v.parts = append(v.parts, NewVote(m.sizes))
	}
	if len(v.layersOf) < parts {
		v.layersOf = make([][][]uint32, parts)
	}
	parallel(max(parts, 1), len(v.keptRanks), func(i, lo, hi int) {
		b := v.borda
		if i > 0 {
			b = v.parts[i-1]
		}
		b.Reset()
		layers := grow(v.layersOf[i], len(m.sizes))
		v.layersOf[i] = layers
		for _, r := range v.keptRanks[lo:hi] {
			for l, n := range m.sizes {
				layers[l] = r[m.offs[l] : m.offs[l]+n]
			}
			// Add checked these rankings when they were stored.
			if err := b.addValid(layers); err != nil {
				panic(fmt.Sprintf("rankvote: FilteredVote: %v", err))
			}
		}
	})
	for _, p := range v.parts[:max(parts-1, 0)] {
		if err := v.borda.Merge(p); err != nil {
			panic(fmt.Sprintf("rankvote: FilteredVote: %v", err))
		}
	}
	for l := range m.sizes {
		orders[l] = v.borda.Result(l, orders[l])
	}
	return orders
}

// Filter does the first half of Result: it measures every voter's distance to
// the median-position consensus and decides which voters are kept (reported
// by Distances, Kept and Limit), without counting the vote. It writes the
// consensus of every layer into cons (each resized to its layer's size and
// allocated if short; cons itself is allocated if its length is not the
// number of layers) and returns it.
func (v *FilteredVote) Filter(cons [][]uint32) [][]uint32 {
	if len(cons) != len(v.med.sizes) {
		cons = make([][]uint32, len(v.med.sizes))
	}
	v.filter(cons)
	return cons
}

// filter measures the voters against the consensus, writing it into cons
// unless cons is nil.
func (v *FilteredVote) filter(cons [][]uint32) {
	m := v.med
	k := m.voters
	v.dist = append(v.dist[:0], make([]float64, k)...)
	layers := 0
	for l, n := range m.sizes {
		c := v.cons
		if cons != nil {
			cons[l] = m.Result(l, cons[l])
			c = cons[l]
		}
		if n < 2 || k == 0 {
			continue
		}
		layers++
		if cons == nil {
			v.cons = m.Result(l, v.cons)
			c = v.cons
		}
		v.cpos = growUint32(v.cpos, n)
		for i, e := range c {
			v.cpos[e] = uint32(i)
		}
		maxF := float64(uint64(n) * uint64(n) / 2)
		off := m.offs[l]
		v.foot = growUint64(v.foot, k)
		parts := 1
		if n >= minParallel {
			parts = min(resolveWorkers(m.workers), k)
		}
		parallel(parts, k, func(_, lo, hi int) {
			for j := lo; j < hi; j++ {
				v.foot[j] = footrule(m.ranks[j][off:off+n], v.cpos)
			}
		})
		for j, f := range v.foot[:k] {
			v.dist[j] += float64(f) / maxF
		}
	}
	for j := range v.dist {
		v.dist[j] /= float64(max(layers, 1))
	}
	v.kept = append(v.kept[:0], make([]bool, k)...)
	v.limit = HampelLimit(v.dist)
	for j, d := range v.dist {
		v.kept[j] = d <= v.limit
	}
}

// Footrule is the Spearman footrule distance between ranking r and the
// ranking whose positions are pos (pos[e] is the position of edge e): the sum
// over i of |i - pos[r[i]]|. FilteredVote divides it by floor(n²/2), its
// maximum over rankings of n edges. r and pos must have the same length and
// hold a permutation of 0..len-1 (pos indexed by r's values).
func Footrule(r, pos []uint32) uint64 { return footrule(r, pos) }

// footrule is Footrule.
func footrule(r, pos []uint32) uint64 {
	var f uint64
	for i, e := range r {
		c := pos[e]
		if uint32(i) > c {
			f += uint64(uint32(i) - c)
		} else {
			f += uint64(c - uint32(i))
		}
	}
	return f
}

// HampelLimit is the largest value of d that FilteredVote does not count as
// an outlier: median + HampelK × MAD (the median absolute deviation from the
// median). 0 for an empty d. d is not modified.
func HampelLimit(d []float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	med := medianSorted(s)
	for i, x := range s {
		s[i] = math.Abs(x - med)
	}
	slices.Sort(s)
	return med + HampelK*medianSorted(s)
}

func medianSorted(s []float64) float64 {
	h := len(s) / 2
	if len(s)%2 == 1 {
		return s[h]
	}
	return (s[h-1] + s[h]) / 2
}

package task

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedrank/fedrank/rankvote"
)

// DefaultAdaptiveTarget is the fraction of its estimate of vote-robust's
// distance limit that AttackAdaptive aims at. The estimate is off by 10-25%
// either way from round to round (the attackers see 25 honest-like rankings,
// not the round's), so aiming at all of it gets the attackers dropped in
// about a third of the rounds; at 0.75 they are kept in nearly all.
const DefaultAdaptiveTarget = 0.75

// DefaultAdaptiveNoise is AttackAdaptiveNoise's share of the distance
// budget spent on each attacker's own moves. On seed 4 of the FRL MNIST
// setting, against vote-clamp, 0.5 and 0.8 did about as much harm
// (BENCHMARKS.md, issue 9).
const DefaultAdaptiveNoise = 0.5

// AdaptiveResult is what AttackAdaptive computed, for tests and reports.
type AdaptiveResult struct {
	Order [][]uint32 // the crafted ranking, per layer
	// Consensus is the attackers' estimate of the round's consensus: the
	// median-position ranking of their honestly trained rankings, per layer.
	Consensus [][]uint32
	// Limit is their estimate of the filter's distance limit, Target the
	// distance they aimed at (Poison.Target × Limit), and Distance the
	// crafted ranking's distance to Consensus as the filter measures it
	// (the mean over layers of the Spearman footrule over floor(n²/2)); it
	// is at most Target.
	Limit, Target, Distance float64
	// Moved is, per layer, how many edges were moved across a boundary of
	// the mask, of Candidates that could have been.
	Moved, Candidates []int
}

// Adaptive crafts the update of AttackAdaptive, an attack on "vote-robust"
// (rankvote.FilteredVote) by colluding attackers who know its rule: a Borda
// count over the voters whose distance to the median-position consensus
// (the mean over layers of the Spearman footrule over floor(n²/2)) is at
// most median + rankvote.HampelK × MAD of the round's distances.
//
// The attackers see only their own updates, p.Honest, trained honestly from
// the global model (the simulator trains min(attackers, per-round) attacker
// clients, as the FRL reference does for rank reversal). From them they
// estimate the round's consensus, as the filter computes it (the median
// position of each edge over their rankings), and the filter's limit (see
// estimateLimit); Target is p.Target times that limit.
//
// The crafted ranking, which all the round's attackers send, is that
// consensus with edges moved across the two boundaries of the mask. A
// layer's mask keeps the edges at both ends of the ranking, positions
// [0, lo) and [hi, n); only moves across lo or hi change the model. In the
// Borda count the m attackers of k voters move an edge's position sum as
// much as moving it by m/k of the distance for every voter, so an edge
// offset positions inside its nearest boundary is moved (offset+1)·k/m
// positions, as far as carries it there in the vote; edges too deep to get
// there within the layer are left alone. Which edges: the attackers' own
// training says how much each edge gained in |score|, the quantity the mask
// keeps the largest of: a kept edge that gained is one the honest peers are
// making more useful, an unkept edge that lost one they are making less so.
// Those are the candidates (kept edges with a gain, to move out; unkept
// ones with a loss, to move in), ranked by |gain| per unit of the distance
// their move costs, about 2·(offset+1)·k/m over floor(n²/2). The number
// moved, best first, is binary-searched to land just under Target. Edges
// nearest the boundaries cost least, so they are favoured. (Moving the
// edges nearest the boundaries whatever training did to them, a first
// version, cost vote-robust only 1-2 points in 15 MNIST rounds: many of
// them are edges training is moving that way anyway, and the budget went to
// them.)
//
// Against the plain Borda vote ("vote") the same ranking does about as much
// harm: the distance limit is then only what keeps it close to an honest
// ranking.
//
// Two variants send a different ranking from every attacker of the round
// (p.Index of p.Attackers), so that a filter on how alike the voters'
// rankings are cannot single them out. AttackAdaptiveSplit deals the
// candidates out, best first, candidate r to attackers r .. r+Group-1 (mod
// Attackers), and moves each as far as Group votes need. AttackAdaptiveNoise
// spends a share 1-Noise of the target on the moves all attackers share and
// the rest on each attacker's own moves (addNoise), which leave the mask as
// it is.
func (t *FRL) Adaptive(p Poison) (AdaptiveResult, error) {
	if p.Attack != AttackAdaptive && p.Attack != AttackAdaptiveSplit && p.Attack != AttackAdaptiveNoise && p.Attack != AttackAdaptiveRotate {
		return AdaptiveResult{}, fmt.Errorf("task %s: Adaptive of %q: %w", t.cfg.Name, p.Attack, ErrAttackKind)
	}
	target := cmp.Or(p.Target, DefaultAdaptiveTarget)
	if !(target > 0 && target <= 100) {
		return AdaptiveResult{}, fmt.Errorf("task %s: %s: target %v, want a fraction of the limit in (0, 100]", t.cfg.Name, p.Attack, target)
	}
	m, k := p.Attackers, p.Voters
	if m <= 0 || k <= m {
		m, k = 1, 5
	}
	global, err := t.spec.DecodeFRLModel(p.Job.Model, nil)
	if err != nil {
		return AdaptiveResult{}, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
	}
	layers := t.spec.Layers()
	fv := rankvote.NewFilteredVote(layers)
	// gain[l][e]: first the sum of the |score| edge e got in each trained ranking.
	gain := make([][]float64, len(layers))
	for l, n := range layers {
		gain[l] = make([]float64, n)
	}
	add := func(r [][]uint32) error {
		if err := fv.Add(r); err != nil {
			return err
		}
		for l, order := range r {
			sorted, g := t.net.Layers[l].Sorted, gain[l]
			for i, e := range order {
				g[e] += math.Abs(float64(sorted[i]))
			}
		}
		return nil
	}
	noise := p.Attack == AttackAdaptiveNoise
	var honest [][][]uint32 // kept for the radius estimate of AttackAdaptiveNoise
	addKeep := add
	if noise {
		addKeep = func(r [][]uint32) error {
			c := make([][]uint32, len(r))
			for l := range r {
				c[l] = slices.Clone(r[l])
			}
			honest = append(honest, c)
			return add(r)
		}
	}
	if err := t.decodeHonest(p, addKeep); err != nil {
		return AdaptiveResult{}, err
	}
	res := AdaptiveResult{
		Consensus:  fv.Filter(nil), // and the distances, for the limit
		Order:      make([][]uint32, len(layers)),
		Moved:      make([]int, len(layers)),
		Candidates: make([]int, len(layers)),
	}
	res.Limit = estimateLimit(fv.Distances(), m, k)
	res.Target = target * res.Limit
	shared := res.Target
	if noise {
		q := cmp.Or(p.Noise, DefaultAdaptiveNoise)
		if !(q > 0 && q < 1) {
			return AdaptiveResult{}, fmt.Errorf("task %s: %s: noise share %v, want (0, 1)", t.cfg.Name, p.Attack, q)
		}
		shared = (1 - q) * res.Target
	}

	split := p.Attack == AttackAdaptiveSplit
	group := m
	if split {
		group = min(max(p.Group, 1), m)
		if p.Index < 0 || p.Index >= m {
			return AdaptiveResult{}, fmt.Errorf("task %s: %s: attacker %d of %d", t.cfg.Name, p.Attack, p.Index, m)
		}
	}
	reach := float64(k) / float64(group)
	if p.Attack == AttackAdaptiveRotate {
		return rotateBoundaries(res, layers, func(l int) []bool { return t.net.Layers[l].On }), nil
	}
	st := make([]boundaryLayer, len(layers))
	var cands []candidate
	counted := 0
	for l, n := range layers {
		st[l] = newBoundaryLayer(res.Consensus[l], t.net.Layers[l].On)
		if n < 2 {
			continue
		}
		counted++
		g, sorted := gain[l], t.net.Layers[l].Sorted
		for i, e := range global[l] {
			g[e] = g[e]/float64(len(p.Honest)) - math.Abs(float64(sorted[i]))
		}
		before := len(cands)
		cands = st[l].candidates(cands, l, g, reach)
		res.Candidates[l] = len(cands) - before
	}
	if split {
		cands = splitCandidates(cands, p.Index, group, m)
	}
	rankCandidates(cands, st)

	// craft fills res.Order with the best n candidates moved and returns
	// its distance to the consensus.
	craft := func(n int) float64 {
		var d float64
		for l := range st {
			res.Order[l] = st[l].move(res.Order[l], n)
			if len(res.Order[l]) >= 2 {
				d += float64(rankvote.Footrule(res.Order[l], st[l].pos)) / st[l].maxF()
			}
		}
		return d / float64(max(counted, 1))
	}
	lo, hi := 0, len(cands)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if craft(mid) <= shared {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	res.Distance = craft(lo)
	if noise {
		res.Distance = addNoise(res.Order, st, honest, res.Target, p.Job.Seed^uint64(p.Index+1)*0x9e3779b97f4a7c15)
	}
	for _, c := range cands[:lo] {
		res.Moved[c.layer]++
	}
	return res, nil
}

// boundaryLayer is one layer's estimated consensus and its mask.
type boundaryLayer struct {
	cons   []uint32    // the consensus ranking
	pos    []uint32    // pos[e]: e's position in cons
	lo, hi int         // the mask keeps positions [0, lo) and [hi, n)
	cands  []candidate // the layer's candidates, by where they go
	moved  []bool      // scratch of move
}

func newBoundaryLayer(cons []uint32, on []bool) boundaryLayer {
	b := boundaryLayer{cons: cons, pos: make([]uint32, len(cons)), moved: make([]bool, len(cons))}
	for i, e := range cons {
		b.pos[e] = uint32(i)
	}
	n := len(on)
	for b.lo < n && on[b.lo] {
		b.lo++
	}
	b.hi = n
	for b.hi > b.lo && on[b.hi-1] {
		b.hi--
	}
	return b
}

func (b *boundaryLayer) maxF() float64 { n := uint64(len(b.cons)); return float64(n * n / 2) }

// candidate is an edge the attack may move across a boundary of the mask.
type candidate struct {
	layer int
	edge  uint32
	to    float64 // its position key in the crafted ranking
	ratio float64 // |gain| per unit of normalised distance
	rank  int     // its place among all candidates by ratio, best first
}

// candidates appends the layer's candidates: the kept edges that gained
// |score| (gain > 0), to be moved out of the mask, and the unkept ones that
// lost (gain < 0), to be moved in, each (offset+1)·reach positions past its
// nearest boundary, offset being how far inside it stands; those that would
// leave the ranking are left out.
func (b *boundaryLayer) candidates(dst []candidate, layer int, gain []float64, reach float64) []candidate {
	n := len(b.cons)
	for p, e := range b.cons {
		var delta float64
		switch g := gain[e]; {
		case p < b.lo && g > 0:
			delta = float64(b.lo-p) * reach
		case p >= b.hi && g > 0:
			delta = -float64(p-b.hi+1) * reach
		case p >= b.lo && p < b.hi && g < 0:
			if p-b.lo <= b.hi-1-p {
				delta = -float64(p-b.lo+1) * reach
			} else {
				delta = float64(b.hi-p) * reach
			}
		default:
			continue
		}
		to := float64(p) + delta
		if to < 0 || to > float64(n-1) {
			continue
		}
		// The move costs about twice its length: the edges it passes shift by one.
		dst = append(dst, candidate{layer: layer, edge: e, to: to, ratio: math.Abs(gain[e]) * b.maxF() / (2 * math.Abs(delta))})
	}
	return dst
}

// rankCandidates ranks cands by ratio, best first, and hands each layer of
// st its own, in the order of where they go.
func rankCandidates(cands []candidate, st []boundaryLayer) {
	slices.SortStableFunc(cands, func(a, b candidate) int { return cmp.Compare(b.ratio, a.ratio) })
	for i := range cands {
		cands[i].rank = i
	}
	for _, c := range cands {
		st[c.layer].cands = append(st[c.layer].cands, c)
	}
	for l := range st {
		slices.SortFunc(st[l].cands, func(x, y candidate) int {
			if c := cmp.Compare(x.to, y.to); c != 0 {
				return c
			}
			return cmp.Compare(x.edge, y.edge)
		})
	}
}

// move writes into dst (resized) the consensus with the layer's candidates
// of rank below best moved to where they go; the other edges keep their
// order.
func (b *boundaryLayer) move(dst []uint32, best int) []uint32 {
	for _, c := range b.cands {
		b.moved[c.edge] = c.rank < best
	}
	dst = dst[:0]
	j := 0
	for p, e := range b.cons {
		for ; j < len(b.cands) && b.cands[j].to < float64(p); j++ {
			if b.cands[j].rank < best {
				dst = append(dst, b.cands[j].edge)
			}
		}
		if !b.moved[e] {
			dst = append(dst, e)
		}
	}
	for ; j < len(b.cands); j++ {
		if b.cands[j].rank < best {
			dst = append(dst, b.cands[j].edge)
		}
	}
	return dst
}

// estimateLimit is the attackers' estimate of vote-robust's distance limit,
// from d, the distances of their honestly trained rankings to their own
// consensus. The round holds k-m honest voters, whose distances the
// attackers take to be distributed as d, and m attackers at one distance x:
// the estimate is the largest x not above rankvote.HampelLimit of those k
// distances (the attackers' own distances raise the median, and with it the
// limit).
func estimateLimit(d []float64, m, k int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	h := k - m
	all := make([]float64, 0, k)
	for j := range h {
		all = append(all, quantile(s, (float64(j)+0.5)/float64(h)))
	}
	limit := func(x float64) float64 {
		all = all[:h]
		for range m {
			all = append(all, x)
		}
		return rankvote.HampelLimit(all)
	}
	lo, hi := 0.0, 1.0
	for range 50 {
		mid := (lo + hi) / 2
		if mid <= limit(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// quantile is the q-quantile of sorted s, interpolated linearly.
func quantile(s []float64, q float64) float64 {
	x := q * float64(len(s)-1)
	i := int(x)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	f := x - float64(i)
	return s[i]*(1-f) + s[i+1]*f
}

// splitCandidates keeps the candidates of attacker index of m when each is
// moved by group attackers: ranked by ratio, best first, candidate r goes to
// attackers r, r+1, ..., r+group-1 (mod m).
func splitCandidates(cands []candidate, index, group, m int) []candidate {
	slices.SortStableFunc(cands, func(a, b candidate) int { return cmp.Compare(b.ratio, a.ratio) })
	out := cands[:0]
	for r, c := range cands {
		if (index-r%m+m)%m < group {
			out = append(out, c)
		}
	}
	return out
}

// addNoise adds to the crafted rankings order (one per layer) each
// attacker's own moves: edges in the unkept middle of the mask, at least the
// estimated clamp radius c away from its boundaries, moved c positions up or
// down (c = rankvote.DefaultClampAlpha x the median over the honest rankings
// of their mean distance from the consensus). The share of them moved,
// drawn with seed, is binary-searched to land the distance under target. It
// returns the final distance.
func addNoise(order [][]uint32, st []boundaryLayer, honest [][][]uint32, target float64, seed uint64) float64 {
	type layerNoise struct {
		base  []uint32
		c     uint64
		picks []uint32 // middle edges, shuffled
		up    []bool
		keys  []uint64
	}
	rng := rand.New(rand.NewPCG(seed, 0x6e6f697365))
	ln := make([]layerNoise, len(order))
	counted := 0
	for l, o := range order {
		n := len(o)
		if n < 2 {
			continue
		}
		counted++
		disp := make([]float64, 0, len(honest))
		for _, h := range honest {
			var d uint64
			for i, e := range h[l] {
				d += uint64(max(int64(i)-int64(st[l].pos[e]), int64(st[l].pos[e])-int64(i)))
			}
			disp = append(disp, float64(d)/float64(n))
		}
		c := uint64(rankvote.ClampRadius(disp, rankvote.DefaultClampAlpha, n))
		x := layerNoise{base: slices.Clone(o), c: c, keys: make([]uint64, n)}
		for i, e := range o {
			if uint64(i) >= uint64(st[l].lo)+c && uint64(i)+c < uint64(st[l].hi) {
				x.picks = append(x.picks, e)
			}
		}
		rng.Shuffle(len(x.picks), func(i, j int) { x.picks[i], x.picks[j] = x.picks[j], x.picks[i] })
		x.up = make([]bool, len(x.picks))
		for i := range x.up {
			x.up[i] = rng.IntN(2) == 0
		}
		ln[l] = x
	}
	var sorter rankvote.Sorter
	craft := func(frac float64) float64 {
		var d float64
		for l := range order {
			x := &ln[l]
			if x.base == nil {
				continue
			}
			for i, e := range x.base {
				x.keys[e] = 4*(uint64(i)+x.c) + 1 // even room around every position
			}
			k := int(frac * float64(len(x.picks)))
			for i, e := range x.picks[:k] {
				if x.up[i] {
					x.keys[e] += 4 * x.c
				} else {
					x.keys[e] -= 4 * x.c
				}
				x.keys[e]++ // after the edge it lands on
			}
			order[l] = sorter.ArgsortUint64(x.keys, order[l])
			d += float64(rankvote.Footrule(order[l], st[l].pos)) / st[l].maxF()
		}
		return d / float64(max(counted, 1))
	}
	lo, hi := 0.0, 1.0
	if craft(hi) <= target {
		lo = hi
	} else {
		for range 20 {
			mid := (lo + hi) / 2
			if craft(mid) <= target {
				lo = mid
			} else {
				hi = mid
			}
		}
	}
	return craft(lo)
}

// rotateBoundaries fills res.Order with the consensus in which, in every
// layer, the w positions just inside each boundary of the mask trade places
// with the w just outside it (w the same fraction of every layer, at most
// the room there is), the largest fraction whose distance to the consensus
// is within res.Target.
func rotateBoundaries(res AdaptiveResult, layers []int, on func(l int) []bool) AdaptiveResult {
	st := make([]boundaryLayer, len(layers))
	counted := 0
	for l, n := range layers {
		st[l] = newBoundaryLayer(res.Consensus[l], on(l))
		if n >= 2 {
			counted++
		}
	}
	craft := func(f float64) float64 {
		var d float64
		for l, n := range layers {
			b := &st[l]
			o := append(res.Order[l][:0], b.cons...)
			w := min(int(f*float64(n)), b.lo, (b.hi-b.lo)/2, n-b.hi)
			if w > 0 {
				copy(o[b.lo-w:], b.cons[b.lo:b.lo+w])
				copy(o[b.lo:], b.cons[b.lo-w:b.lo])
				copy(o[b.hi-w:], b.cons[b.hi:b.hi+w])
				copy(o[b.hi:], b.cons[b.hi-w:b.hi])
			}
			res.Order[l] = o
			if n >= 2 {
				d += float64(rankvote.Footrule(o, b.pos)) / b.maxF()
			}
		}
		return d / float64(max(counted, 1))
	}
	lo, hi := 0.0, 0.5
	for range 30 {
		mid := (lo + hi) / 2
		if craft(mid) <= res.Target {
			lo = mid
		} else {
			hi = mid
		}
	}
	res.Distance = craft(lo)
	return res
}

package model

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// SupermaskTrainer trains a supermask network's scores on one goroutine. It
// keeps its buffers between clients: Load, Train, Scores, Load, ...
//
// The mask of each step needs, per layer, the Keep-th largest |score|. A full
// selection per step would dominate the round, so the update pass tracks a
// narrow band around the previous threshold: it counts the scores above the
// band and collects those inside it, and the new threshold is selected among
// the few candidates. When the threshold leaves the band the trainer falls
// back to a full selection and widens the band.
type SupermaskTrainer struct {
	net    *Supermask
	e      netEngine
	scores [][]float32
	mom    [][]float32
	eff    [][]float32
	colsum []float32
	thr    []uint32 // per layer: smallest kept |score| bit pattern
	bands  []band
	order  []int32
	scr    []uint32
	mu, wd float32
	// Fallbacks counts full selections (band misses); exposed for tests and benchmarks.
	Fallbacks int
	// FullSelect makes every step select its thresholds over all scores, as a
	// straight port of the reference does, instead of tracking the band. The
	// result is the same; it exists as the baseline of the benchmarks.
	FullSelect bool
}

type band struct {
	lo, hi uint32   // |score| bit patterns; scores in [lo, hi] are candidates
	width  uint32   // half-width of the band in bit-pattern units
	above  int      // scores with |s| > hi
	cand   []uint64 // candidates: |score| bits << 32 | edge index
}

// NewTrainer returns a trainer for batches of at most maxBatch images.
func (net *Supermask) NewTrainer(maxBatch int) *SupermaskTrainer {
	L := len(net.Layers)
	t := &SupermaskTrainer{
		net:    net,
		e:      net.newEngine(maxBatch),
		scores: make([][]float32, L),
		mom:    make([][]float32, L),
		eff:    make([][]float32, L),
		thr:    make([]uint32, L),
		bands:  make([]band, L),
	}
	for l := range net.Layers {
		n := net.Layers[l].N()
		t.scores[l] = make([]float32, n)
		t.mom[l] = make([]float32, n)
		t.eff[l] = make([]float32, n)
		// About 1% of the edges fall in a band of ±0.5% around a threshold
		// near the middle of |score|'s uniform range.
		t.bands[l].width = 1 << 23 / 200
	}
	return t
}

// newEngine returns the forward and backward engine of the network.
func (net *Supermask) newEngine(maxBatch int) netEngine {
	if net.Conv != nil {
		return newConvEngine(*net.Conv, maxBatch)
	}
	return newEngine(net.Sizes, maxBatch)
}

// Load starts a client from a global model given by its per-layer rankings.
// Momentum is reset (the reference creates a fresh optimizer every round).
func (t *SupermaskTrainer) Load(order [][]uint32) error {
	if _, err := t.net.ScoresFromRanking(order, t.scores); err != nil {
		return err
	}
	for l := range t.net.Layers {
		fill(t.mom[l], 0)
		t.thr[l] = t.net.Layers[l].thr
		t.rebuild(l)
	}
	return nil
}

// Scores returns the trainer's current scores (aliased; valid until the next Load).
func (t *SupermaskTrainer) Scores() [][]float32 { return t.scores }

// Train runs local training on the given samples of in, from the loaded
// model, and returns the mean loss of the last epoch.
func (t *SupermaskTrainer) Train(in *Inputs, samples []int32, h Hyper, rng *rand.Rand) (float64, error) {
	if in.Dim != t.net.InputDim() {
		return 0, fmt.Errorf("model: inputs have %d features, network expects %d", in.Dim, t.net.InputDim())
	}
	t.mu, t.wd = float32(h.Momentum), float32(h.WeightDecay)
	var loss float64
	var err error
	t.order, loss, err = runEpochs(t.e, t, in, samples, h, rng, t.order)
	return loss, err
}

func (t *SupermaskTrainer) forward(e netEngine, in *Inputs, batch []int32) [][]float32 {
	e.forward(t.eff, t.colsum, in, batch)
	return t.eff
}

func (t *SupermaskTrainer) update(e netEngine, B int, offset, lr float32) {
	for l := range t.net.Layers {
		ly := &t.net.Layers[l]
		I, O := ly.In, ly.Out
		bd := &t.bands[l]
		prev := t.thr[l]
		bd.lo = prev - min(prev, bd.width)
		bd.hi = min(prev+bd.width, 0x7fffffff)
		bd.above = 0
		bd.cand = bd.cand[:0]
		if t.FullSelect {
			bd.lo, bd.hi = signBit, signBit // no |score| lies in this band
		}
		s, m, w, eff := t.scores[l], t.mom[l], ly.W, t.eff[l]
		for i := 0; i < I; i++ {
			g := e.rowGrad(l, i, B, offset)
			r := i * O
			smUpdateRow(s[r:r+O], m[r:r+O], w[r:r+O], eff[r:r+O], g, uint32(r), lr, t.mu, t.wd, bd)
		}
		t.setThreshold(l)
	}
}

// setThreshold finds layer l's new threshold and completes its effective
// weights: the update pass already set every edge outside the band (kept
// above it, dropped below), so only the candidates inside it are left, unless
// the threshold left the band and the layer is rebuilt in full.
func (t *SupermaskTrainer) setThreshold(l int) {
	ly := &t.net.Layers[l]
	bd := &t.bands[l]
	thr, inBand := t.selectThreshold(l)
	t.thr[l] = thr
	if !inBand {
		t.rebuild(l)
		return
	}
	eff := t.eff[l]
	for _, c := range bd.cand {
		if uint32(c>>32) >= thr {
			e := uint32(c)
			eff[e] = ly.W[e]
		}
	}
	if l == 0 {
		t.colsum = columnSums(eff, ly.In, ly.Out, t.colsum)
	}
}

// smUpdateRow applies SGD with momentum and weight decay to one row of scores,
// with the straight-through gradient of the mask and of |score|:
// dL/ds = dL/dw_eff · w · sign(s). It feeds the threshold band and sets the
// effective weight of every edge whose mask the band already decides: w above
// the band, 0 below it and, for now, inside it. first is the row's first edge.
func smUpdateRow(s, m, w, eff, g []float32, first uint32, lr, mu, wd float32, bd *band) {
	j0 := smUpdateRowVector(s, m, w, eff, g, first, lr, mu, wd, bd) // the vector build's leading blocks
	n := len(s)
	m, w, eff, g = m[:n], w[:n], eff[:n], g[:n]
	lo, hi := bd.lo, bd.hi
	span := hi - lo
	above := bd.above
	for j := j0; j < n; j++ {
		sj := s[j]
		wb := math.Float32bits(w[j])
		ws := math.Float32frombits(wb ^ (math.Float32bits(sj) & signBit))
		mj := mu*m[j] + (g[j]*ws + wd*sj)
		m[j] = mj
		sj -= lr * mj
		s[j] = sj
		ab := math.Float32bits(sj) &^ signBit
		// All ones when |s| > hi (hi-ab is negative as an int32), else zero.
		kept := uint32(int32(hi-ab) >> 31)
		eff[j] = math.Float32frombits(wb & kept)
		above += int(kept & 1)
		if ab-lo <= span {
			bd.cand = append(bd.cand, uint64(ab)<<32|uint64(first+uint32(j)))
		}
	}
	bd.above = above
}

// selectThreshold finds layer l's Keep-th largest |score| after an update,
// and whether it was found inside the band.
func (t *SupermaskTrainer) selectThreshold(l int) (uint32, bool) {
	bd := &t.bands[l]
	keep := t.net.Layers[l].Keep
	if t.FullSelect {
		return t.fullThreshold(l), false
	}
	if bd.above < keep && bd.above+len(bd.cand) >= keep {
		// Keys order by |score| first, so the k-th largest key carries the
		// k-th largest |score|.
		thr := uint32(selectKthLargest(bd.cand, keep-bd.above) >> 32)
		if len(bd.cand) > t.net.Layers[l].N()/25 && bd.width > 16 {
			bd.width /= 2
		}
		return thr, true
	}
	t.Fallbacks++
	if bd.width < 1<<28 {
		bd.width *= 4
	}
	return t.fullThreshold(l), false
}

// fullThreshold selects layer l's Keep-th largest |score| among all scores.
func (t *SupermaskTrainer) fullThreshold(l int) uint32 {
	return kthLargestAbs(t.scores[l], t.net.Layers[l].Keep, &t.scr)
}

// rebuild recomputes layer l's effective weights from its scores and
// threshold (and the first layer's column sums). Branch-free: the mask is the
// sign of thr-1-|s| on the float bit patterns.
func (t *SupermaskTrainer) rebuild(l int) {
	ly := &t.net.Layers[l]
	s, w, eff := t.scores[l], ly.W, t.eff[l]
	w, eff = w[:len(s)], eff[:len(s)]
	thr1 := t.thr[l] - 1
	for j, v := range s {
		ab := math.Float32bits(v) &^ signBit
		keep := uint32(int32(thr1-ab) >> 31)
		eff[j] = math.Float32frombits(math.Float32bits(w[j]) & keep)
	}
	if l == 0 {
		t.colsum = columnSums(eff, ly.In, ly.Out, t.colsum)
	}
}

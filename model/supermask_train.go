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
	e      *engine
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
	lo, hi uint32 // |score| bit patterns; scores in [lo, hi] are candidates
	width  uint32 // half-width of the band in bit-pattern units
	above  int    // scores with |s| > hi
	cand   []uint32
}

// NewTrainer returns a trainer for batches of at most maxBatch images.
func (net *Supermask) NewTrainer(maxBatch int) *SupermaskTrainer {
	L := len(net.Layers)
	t := &SupermaskTrainer{
		net:    net,
		e:      newEngine(net.Sizes, maxBatch),
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
	if in.Dim != t.net.Sizes[0] {
		return 0, fmt.Errorf("model: inputs have %d features, network expects %d", in.Dim, t.net.Sizes[0])
	}
	t.mu, t.wd = float32(h.Momentum), float32(h.WeightDecay)
	var loss float64
	var err error
	t.order, loss, err = runEpochs(t.e, t, in, samples, h, rng, t.order)
	return loss, err
}

func (t *SupermaskTrainer) effective() ([][]float32, []float32) { return t.eff, t.colsum }

func (t *SupermaskTrainer) update(e *engine, B int, offset, lr float32) {
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
		s, m, w := t.scores[l], t.mom[l], ly.W
		for i := 0; i < I; i++ {
			g := e.rowGrad(l, i, B, offset)
			r := i * O
			smUpdateRow(s[r:r+O], m[r:r+O], w[r:r+O], g, lr, t.mu, t.wd, bd)
		}
		if t.FullSelect {
			t.thr[l] = t.fullThreshold(l)
		} else {
			t.thr[l] = t.selectThreshold(l)
		}
		t.rebuild(l)
	}
}

// smUpdateRow applies SGD with momentum and weight decay to one row of scores,
// with the straight-through gradient of the mask and of |score|:
// dL/ds = dL/dw_eff · w · sign(s). It also feeds the threshold band.
func smUpdateRow(s, m, w, g []float32, lr, mu, wd float32, bd *band) {
	n := len(s)
	m, w, g = m[:n], w[:n], g[:n]
	lo, hi := bd.lo, bd.hi
	span := hi - lo
	above := bd.above
	for j := 0; j < n; j++ {
		sj := s[j]
		sb := math.Float32bits(sj)
		ws := math.Float32frombits(math.Float32bits(w[j]) ^ (sb & signBit))
		mj := mu*m[j] + (g[j]*ws + wd*sj)
		m[j] = mj
		sj -= lr * mj
		s[j] = sj
		ab := math.Float32bits(sj) &^ signBit
		above += int((hi - ab) >> 31)
		if ab-lo <= span {
			bd.cand = append(bd.cand, ab)
		}
	}
	bd.above = above
}

// selectThreshold finds layer l's Keep-th largest |score| after an update.
func (t *SupermaskTrainer) selectThreshold(l int) uint32 {
	bd := &t.bands[l]
	keep := t.net.Layers[l].Keep
	if bd.above < keep && bd.above+len(bd.cand) >= keep {
		thr := selectKthLargest(bd.cand, keep-bd.above)
		if len(bd.cand) > t.net.Layers[l].N()/25 && bd.width > 16 {
			bd.width /= 2
		}
		return thr
	}
	t.Fallbacks++
	if bd.width < 1<<28 {
		bd.width *= 4
	}
	return t.fullThreshold(l)
}

// fullThreshold selects layer l's Keep-th largest |score| among all scores.
func (t *SupermaskTrainer) fullThreshold(l int) uint32 {
	keep := t.net.Layers[l].Keep
	s := t.scores[l]
	if cap(t.scr) < len(s) {
		t.scr = make([]uint32, len(s))
	}
	scr := t.scr[:len(s)]
	for i, v := range s {
		scr[i] = math.Float32bits(v) &^ signBit
	}
	return selectKthLargest(scr, keep)
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

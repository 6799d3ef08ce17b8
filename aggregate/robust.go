package aggregate

import (
	"fmt"
	"slices"

	"github.com/fedrank/fedrank/rankvote"

	"github.com/fedrank/fedrank/internal/selectk"
)

// The robust dense aggregators (coordinate-wise median, trimmed mean,
// Multi-Krum) need every update of the round at once, so none of them
// streams: each keeps the decoded updates, 4 bytes per weight per update
// (26.6 MB for 25 updates of the 266,200-weight MNIST network, 106.5 MB for
// 100), kept across rounds for reuse. Unlike FedAvg they ignore sample counts:
// one peer, one value, so that a peer cannot buy weight by claiming many samples.

// updateSet holds the decoded dense updates of a round, each as one flat row
// of every weight, layer after layer. It is the input side of the robust
// dense aggregators: Begin, Add and Len.
type updateSet struct {
	spec  Spec
	total int
	rows  [][]float32 // rows[:n] are this round's updates; the rest are spare
	n     int
	views [][]float32 // per-layer views into the row being decoded
	drops roundPeers
	// workers is Finalize's goroutines (0: GOMAXPROCS), SetWorkers'.
	workers int
}

// SetWorkers implements Parallel: Finalize splits the coordinates (and
// Multi-Krum the pairs of updates) over n goroutines (0: GOMAXPROCS). Every
// output coordinate and every distance is computed by one goroutine in the
// serial code's order, so the result does not depend on n.
func (s *updateSet) SetWorkers(n int) { s.workers = n }

func newUpdateSet(spec Spec) (updateSet, error) {
	if err := spec.Validate(); err != nil {
		return updateSet{}, err
	}
	s := updateSet{spec: spec.clone()}
	for _, n := range s.spec.Layers() {
		s.total += n
	}
	s.views = make([][]float32, len(s.spec.Layers()))
	return s, nil
}

// Begin implements Aggregator.
func (s *updateSet) Begin(round uint64, global []byte) error {
	if _, err := s.spec.checkHeader(global, magicDenseModel, "dense model"); err != nil {
		return err
	}
	s.n = 0
	s.drops.begin()
	return nil
}

// Add implements Aggregator: it decodes u into the next row. On error the set
// is unchanged (the row is scratch until counted).
func (s *updateSet) Add(u Update) error {
	if s.n == len(s.rows) {
		s.rows = append(s.rows, make([]float32, s.total))
	}
	row, off := s.rows[s.n], 0
	for l, n := range s.spec.Layers() {
		s.views[l] = row[off : off+n]
		off += n
	}
	if _, err := s.spec.DecodeDenseUpdate(u.Payload, s.views); err != nil {
		return fmt.Errorf("update from %s: %w", u.Peer, err)
	}
	s.n++
	s.drops.accept(u.Peer)
	return nil
}

// Len implements Aggregator.
func (s *updateSet) Len() int { return s.n }

// encode splits a flat row into layers and encodes it as a dense model.
func (s *updateSet) encode(flat []float32) []byte {
	w := make([][]float32, len(s.views))
	off := 0
	for l, n := range s.spec.Layers() {
		w[l] = flat[off : off+n]
		off += n
	}
	return s.spec.EncodeDenseModel(w)
}

// coordinatewise returns out[i] = f(the round's values of weight i). f gets
// them in a scratch slice it may reorder.
func (s *updateSet) coordinatewise(f func(vals []float32) float32) []float32 {
	out := make([]float32, s.total)
	rows := s.rows[:s.n]
	parallel(parts(s.workers, s.total), s.total, func(_, lo, hi int) {
		vals := make([]float32, len(rows))
		for i := lo; i < hi; i++ {
			for j, r := range rows {
				vals[j] = r[i]
			}
			out[i] = f(vals)
		}
	})
	return out
}

// Median is the coordinate-wise median (Yin et al., ICML 2018): each weight of
// the new model is the median of the round's values of that weight (the mean
// of the middle two for an even count). Not streaming: see updateSet.
type Median struct{ updateSet }

// NewMedian returns a coordinate-wise median aggregator for networks of spec.
func NewMedian(spec Spec) (*Median, error) {
	s, err := newUpdateSet(spec)
	return &Median{s}, err
}

// Name implements Aggregator.
func (m *Median) Name() string { return "median" }

// Finalize implements Aggregator.
func (m *Median) Finalize() ([]byte, error) {
	if m.n == 0 {
		return nil, ErrNoUpdates
	}
	return m.encode(m.coordinatewise(median)), nil
}

func median(v []float32) float32 {
	k := len(v)
	h := k / 2
	selectk.Nth(v, h)
	if k%2 == 1 {
		return v[h]
	}
	return float32((float64(slices.Max(v[:h])) + float64(v[h])) / 2)
}

// TrimmedMean is the coordinate-wise trimmed mean (Yin et al., ICML 2018):
// each weight of the new model is the mean of the round's values of that
// weight after dropping the trim lowest and the trim highest, trim =
// rankvote.TrimCount(updates, Frac): floor(Frac × updates), at most
// (updates-1)/2. Not streaming (the count to trim is only known at the end
// of the round): see updateSet.
type TrimmedMean struct {
	updateSet
	frac float64
}

// NewTrimmedMean returns a trimmed-mean aggregator that drops the fraction
// frac, in [0, 0.5], of the values at each end.
func NewTrimmedMean(spec Spec, frac float64) (*TrimmedMean, error) {
	if !(frac >= 0 && frac <= 0.5) {
		return nil, fmt.Errorf("aggregate: trimmed-mean: trim fraction %v, want [0, 0.5]", frac)
	}
	s, err := newUpdateSet(spec)
	return &TrimmedMean{s, frac}, err
}

// Name implements Aggregator.
func (t *TrimmedMean) Name() string { return "trimmed-mean" }

// Finalize implements Aggregator.
func (t *TrimmedMean) Finalize() ([]byte, error) {
	k := t.n
	if k == 0 {
		return nil, ErrNoUpdates
	}
	trim := rankvote.TrimCount(k, t.frac)
	inv := 1 / float64(k-2*trim)
	return t.encode(t.coordinatewise(func(v []float32) float32 {
		var s float64
		for _, x := range middle(v, trim) {
			s += float64(x)
		}
		return float32(s * inv)
	})), nil
}

// middle reorders a and returns the values a sort would leave between its
// trim lowest and its trim highest: a sub-slice of a of len(a)-2·trim values,
// in no particular order. It panics unless 0 <= 2·trim < len(a) (or a is empty
// and trim 0). Two selections, O(len(a)).
func middle(a []float32, trim int) []float32 {
	if trim == 0 {
		return a
	}
	if trim < 0 || 2*trim >= len(a) {
		panic(fmt.Sprintf("aggregate: middle: trim %d of %d values", trim, len(a)))
	}
	selectk.Nth(a, trim)
	a = a[trim:]
	selectk.Nth(a, len(a)-trim-1)
	return a[:len(a)-trim]
}

// MultiKrum is Multi-Krum (Blanchard et al., NeurIPS 2017): with k updates
// and f of them assumed Byzantine, each update's score is the sum of its
// squared Euclidean distances to its k-f-2 nearest other updates; the m
// updates with the lowest scores (ties by arrival order) are averaged, every
// one with weight 1 as in the FRL reference.
//
// f < 0 assumes as many Byzantine updates as Krum tolerates, (k-3)/2; an f
// above that is lowered to it for the round (Krum needs k > 2f+2). m <= 0
// averages k-f updates, the usual choice; m above k averages all.
//
// Not streaming: it keeps every update (see updateSet) plus k×k distances, and
// Finalize costs k(k-1)/2 distance computations over all weights (about 80
// million multiply-adds for 25 updates of the MNIST network).
type MultiKrum struct {
	updateSet
	f, m     int
	dist     []float64 // k×k squared distances
	selected []int
}

// NewMultiKrum returns a Multi-Krum aggregator (see MultiKrum for f and m).
func NewMultiKrum(spec Spec, f, m int) (*MultiKrum, error) {
	s, err := newUpdateSet(spec)
	return &MultiKrum{updateSet: s, f: f, m: m}, err
}

// Name implements Aggregator.
func (k *MultiKrum) Name() string { return "multi-krum" }

// Selected returns the indices, in the order of Add, of the updates the last
// Finalize averaged, ascending.
func (k *MultiKrum) Selected() []int { return slices.Clone(k.selected) }

// Dropped implements DropReporter: the updates the last Finalize did not
// select.
func (k *MultiKrum) Dropped() []string { return k.drops.list() }

// Finalize implements Aggregator.
func (k *MultiKrum) Finalize() ([]byte, error) {
	n := k.n
	if n == 0 {
		k.drops.finalize(nil)
		return nil, ErrNoUpdates
	}
	f := max((n-3)/2, 0)
	if k.f >= 0 {
		f = min(k.f, f)
	}
	m := n - f
	if k.m > 0 {
		m = min(k.m, n)
	}
	neighbours := min(max(n-f-2, 0), n-1)

	d := k.distances()
	scores := make([]float64, n)
	row := make([]float64, 0, n)
	for i := range n {
		row = row[:0]
		for j := range n {
			if j != i {
				row = append(row, d[i*n+j])
			}
		}
		slices.Sort(row)
		for _, x := range row[:neighbours] {
			scores[i] += x
		}
	}
	byScore := make([]int, n)
	for i := range byScore {
		byScore[i] = i
	}
	slices.SortStableFunc(byScore, func(a, b int) int {
		switch {
		case scores[a] < scores[b]:
			return -1
		case scores[a] > scores[b]:
			return 1
		}
		return 0
	})
	k.selected = slices.Sorted(slices.Values(byScore[:m]))
	k.drops.finalize(func(i int) bool { _, ok := slices.BinarySearch(k.selected, i); return ok })

	sum := make([]float64, k.total)
	out := make([]float32, k.total)
	inv := 1 / float64(m)
	parallel(parts(k.workers, k.total), k.total, func(_, lo, hi int) {
		sum := sum[lo:hi]
		for _, i := range k.selected {
			for c, v := range k.rows[i][lo:hi] {
				sum[c] += float64(v)
			}
		}
		for c, s := range sum {
			out[lo+c] = float32(s * inv)
		}
	})
	return k.encode(out), nil
}

// distBlock is the number of weights of every update whose distances are
// summed together: 100 updates × 8 KB stay in a 2 MB L2 cache.
const distBlock = 2048

// distances returns the n×n squared Euclidean distances of the round's
// updates, computed block by block so that each block of every update is read
// from memory once.
func (k *MultiKrum) distances() []float64 {
	n := k.n
	if cap(k.dist) < n*n {
		k.dist = make([]float64, n*n)
	}
	d := k.dist[:n*n]
	clear(d)
	rows := k.rows[:n]
	// Part w takes the rows i ≡ w (mod p), so that the parts' shares of
	// the triangle are about even; each pair's blocks are summed in order.
	p := min(parts(k.workers, n*k.total), n)
	parallel(p, p, func(w, _, _ int) {
		for lo := 0; lo < k.total; lo += distBlock {
			hi := min(lo+distBlock, k.total)
			for i := w; i < n; i += p {
				a := rows[i][lo:hi]
				for j := i + 1; j < n; j++ {
					d[i*n+j] += sqDist(a, rows[j][lo:hi])
				}
			}
		}
	})
	for i := range n {
		for j := i + 1; j < n; j++ {
			d[j*n+i] = d[i*n+j]
		}
	}
	return d
}

// sqDist is the squared Euclidean distance of a and b (len(b) >= len(a)), in
// float64 (a float32 difference of two finite weights can overflow), over
// four independent accumulators.
func sqDist(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		d0 := float64(a[i]) - float64(b[i])
		d1 := float64(a[i+1]) - float64(b[i+1])
		d2 := float64(a[i+2]) - float64(b[i+2])
		d3 := float64(a[i+3]) - float64(b[i+3])
		s0 += d0 * d0
		s1 += d1 * d1
		s2 += d2 * d2
		s3 += d3 * d3
	}
	for ; i < len(a); i++ {
		d := float64(a[i]) - float64(b[i])
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

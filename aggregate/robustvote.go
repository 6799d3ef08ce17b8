package aggregate

import (
	"fmt"

	"github.com/fedrank/fedrank/rankvote"
)

// The robust ranking aggregators keep every voter's position of every edge
// until Finalize, unlike the streaming Vote: 4 bytes per edge per update
// (26.6 MB for 25 updates of the 266,200-edge MNIST model, 106.5 MB for 100).
// Every peer has at most one vote, whatever its sample count.

// rankingInput is the input side the robust ranking aggregators share:
// Begin, Add and Len over a rankvote counter.
type rankingInput struct {
	spec  Spec
	count interface {
		Reset()
		Voters() int
		Add(layers [][]uint32) error
	}
	dec   updateDecoder
	drops roundPeers
}

// Begin implements Aggregator: the global model must be an FRL model of this
// network; coded updates (delta, bucket) are decoded against it.
func (r *rankingInput) Begin(round uint64, global []byte) error {
	if err := r.dec.begin(global); err != nil {
		return err
	}
	r.count.Reset()
	r.drops.begin()
	return nil
}

// Add implements Aggregator.
func (r *rankingInput) Add(u Update) error {
	// The counter checks the permutations as it stores the positions, and
	// is unchanged when one is bad.
	ranks, err := r.dec.decode(u.Payload)
	if err != nil {
		return fmt.Errorf("update from %s: %w", u.Peer, err)
	}
	if err := r.count.Add(ranks); err != nil {
		return fmt.Errorf("update from %s: %w: %w", u.Peer, ErrMalformed, err)
	}
	r.drops.accept(u.Peer)
	return nil
}

// RequireRankingFormat implements RankingFormatter.
func (r *rankingInput) RequireRankingFormat(f RankingFormat, bounds [][]uint32) {
	r.dec.requireFormat(f, bounds)
}

// Predecoder implements Predecoding.
func (r *rankingInput) Predecoder() *Predecoder { return r.dec.predecoder() }

// Len implements Aggregator.
func (r *rankingInput) Len() int { return r.count.Voters() }

// Parallel is implemented by the aggregators whose Finalize can use several
// goroutines. SetWorkers sets how many (0, the default: GOMAXPROCS); the
// result does not depend on it, bit for bit. The simulator passes its
// --workers.
type Parallel interface {
	SetWorkers(n int)
}

var (
	_ Parallel = (*TrimmedVote)(nil)
	_ Parallel = (*FilteredVote)(nil)
	_ Parallel = (*ClampedVote)(nil)
	_ Parallel = (*Median)(nil)
	_ Parallel = (*TrimmedMean)(nil)
	_ Parallel = (*MultiKrum)(nil)
)

// filteringVote is a rank vote that leaves whole voters out.
type filteringVote interface {
	Voters() int
	Result(orders [][]uint32) [][]uint32
	Kept() []bool
}

// finalizeFiltered is Finalize of an aggregator over a filtering vote: the
// vote's result as the new model, and the voters it left out as drops.
func (r *rankingInput) finalizeFiltered(v filteringVote) ([]byte, error) {
	if v.Voters() == 0 {
		r.drops.finalize(nil)
		return nil, ErrNoUpdates
	}
	order := v.Result(nil)
	kept := v.Kept()
	r.drops.finalize(func(i int) bool { return kept[i] })
	return r.spec.EncodeFRLModel(order), nil
}

// TrimmedVote orders edges by trimmed position sums (rankvote.TrimmedVote):
// per edge, the positions the voters gave it are sorted, the fraction frac of
// them is dropped at each end, and edges are ordered by the sum of the rest
// (then by the full Borda sum, then by index); the order is the new global
// model, as in Vote. Frac 0.5 orders edges by median position
// ("vote-median"). Not streaming: see the memory note above.
type TrimmedVote struct {
	rankingInput
	name string
	vote *rankvote.TrimmedVote
}

// NewMedianVote returns the "vote-median" aggregator: edges ordered by their
// median position over the round's voters.
func NewMedianVote(spec Spec) (*TrimmedVote, error) { return newTrimmedVote(spec, "vote-median", 0.5) }

// NewTrimmedVote returns a "vote-trimmed" aggregator, which drops the
// fraction frac (in [0, 0.5]) of each edge's positions at each end.
func NewTrimmedVote(spec Spec, frac float64) (*TrimmedVote, error) {
	return newTrimmedVote(spec, "vote-trimmed", frac)
}

func newTrimmedVote(spec Spec, name string, frac float64) (*TrimmedVote, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if !(frac >= 0 && frac <= 0.5) {
		return nil, fmt.Errorf("aggregate: %s: trim fraction %v, want [0, 0.5]", name, frac)
	}
	spec = spec.clone()
	v := &TrimmedVote{name: name, vote: rankvote.NewTrimmedVote(spec.Layers(), frac)}
	v.rankingInput = rankingInput{spec: spec, count: v.vote, dec: updateDecoder{spec: spec}}
	return v, nil
}

// Name implements Aggregator.
func (v *TrimmedVote) Name() string { return v.name }

// SetWorkers implements Parallel.
func (v *TrimmedVote) SetWorkers(n int) { v.vote.SetWorkers(n) }

// Finalize implements Aggregator.
func (v *TrimmedVote) Finalize() ([]byte, error) {
	if v.vote.Voters() == 0 {
		return nil, ErrNoUpdates
	}
	order := make([][]uint32, v.vote.Layers())
	for l := range order {
		order[l] = v.vote.Result(l, nil)
	}
	return v.spec.EncodeFRLModel(order), nil
}

// FilteredVote is the "vote-robust" aggregator (rankvote.FilteredVote): a
// Borda count over the voters whose distance to the median-position consensus
// is not an outlier. Rank-reversal and random-ranking attackers are dropped
// whole; when nobody is dropped the result is exactly Vote's. Not streaming:
// see the memory note above.
type FilteredVote struct {
	rankingInput
	vote *rankvote.FilteredVote
}

// NewFilteredVote returns the "vote-robust" aggregator for networks of spec.
func NewFilteredVote(spec Spec) (*FilteredVote, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.clone()
	v := &FilteredVote{vote: rankvote.NewFilteredVote(spec.Layers())}
	v.rankingInput = rankingInput{spec: spec, count: v.vote, dec: updateDecoder{spec: spec}}
	return v, nil
}

// Name implements Aggregator.
func (v *FilteredVote) Name() string { return "vote-robust" }

// Kept reports, for each update of the round in the order of Add, whether the
// last Finalize counted it.
func (v *FilteredVote) Kept() []bool { return v.vote.Kept() }

// Distances returns, for each update of the round in the order of Add, its
// distance to the consensus as the last Finalize measured it.
func (v *FilteredVote) Distances() []float64 { return v.vote.Distances() }

// Limit is the largest distance the last Finalize kept.
func (v *FilteredVote) Limit() float64 { return v.vote.Limit() }

// Dropped implements DropReporter: the voters the last Finalize filtered out.
func (v *FilteredVote) Dropped() []string { return v.drops.list() }

// SetWorkers implements Parallel.
func (v *FilteredVote) SetWorkers(n int) { v.vote.SetWorkers(n) }

// Finalize implements Aggregator.
func (v *FilteredVote) Finalize() ([]byte, error) { return v.finalizeFiltered(v.vote) }

// ClampedVote is the "vote-clamp" aggregator (rankvote.ClampedVote):
// vote-robust's filter, then a Borda count in which each kept voter's
// position of an edge is clamped to within a radius of the edge's median
// position over the kept voters, so that a coalition below half of them
// cannot move an edge's aggregate position past the honest voters' order
// statistics around the median by more than the radius. Dropped voters are
// reported as for vote-robust. Not streaming: see the memory note above.
type ClampedVote struct {
	rankingInput
	vote *rankvote.ClampedVote
}

// NewClampedVote returns the "vote-clamp" aggregator for networks of spec
// with clamp radius alpha (rankvote.DefaultClampAlpha when 0) times the
// median voter's mean distance from the median positions.
func NewClampedVote(spec Spec, alpha float64) (*ClampedVote, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if alpha == 0 {
		alpha = rankvote.DefaultClampAlpha
	}
	if !(alpha > 0) || alpha > 1e6 {
		return nil, fmt.Errorf("aggregate: vote-clamp: alpha %v, want a positive number", alpha)
	}
	spec = spec.clone()
	v := &ClampedVote{vote: rankvote.NewClampedVote(spec.Layers(), alpha)}
	v.rankingInput = rankingInput{spec: spec, count: v.vote, dec: updateDecoder{spec: spec}}
	return v, nil
}

// Name implements Aggregator.
func (v *ClampedVote) Name() string { return "vote-clamp" }

// Kept reports, for each update of the round in the order of Add, whether the
// last Finalize counted it.
func (v *ClampedVote) Kept() []bool { return v.vote.Kept() }

// Radius is the clamp radius of every layer in the last Finalize.
func (v *ClampedVote) Radius() []uint32 { return v.vote.Radius() }

// Dropped implements DropReporter: the voters the last Finalize filtered out.
func (v *ClampedVote) Dropped() []string { return v.drops.list() }

// SetWorkers implements Parallel.
func (v *ClampedVote) SetWorkers(n int) { v.vote.SetWorkers(n) }

// Finalize implements Aggregator.
func (v *ClampedVote) Finalize() ([]byte, error) { return v.finalizeFiltered(v.vote) }

package aggregate

import (
	"fmt"

	"github.com/fedrank/fedrank/rankvote"
)

// Vote is FRL's aggregation: a Borda count per layer. Each update is a
// ranking per layer; the vote sums every edge's positions over the round's
// voters, orders the edges by their sums (ties by edge index), and that order
// is the new global model (the edge with the i-th smallest sum gets the
// layer's i-th smallest initial score). Every peer has exactly one vote,
// whatever its sample count. Memory is O(edges), whatever the voter count.
type Vote struct {
	spec  Spec
	vote  *rankvote.Vote
	sort  rankvote.Sorter
	dec   updateDecoder
	round uint64
}

// NewVote returns a Borda vote for networks of spec.
func NewVote(spec Spec) (*Vote, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.clone()
	return &Vote{spec: spec, vote: rankvote.NewVote(spec.Layers()), dec: updateDecoder{spec: spec}}, nil
}

// Name implements Aggregator.
func (v *Vote) Name() string { return "vote" }

// Begin implements Aggregator. The previous global model plays no part in a
// Borda vote, but it must be an FRL model of this network; coded
// updates (delta, bucket) are decoded against it.
func (v *Vote) Begin(round uint64, global []byte) error {
	if err := v.dec.begin(global); err != nil {
		return err
	}
	v.round = round
	v.vote.Reset()
	return nil
}

// Add implements Aggregator.
func (v *Vote) Add(u Update) error {
	// Vote.Add checks that every layer is a permutation while it sums, and
	// rolls back on the first bad one.
	ranks, err := v.dec.decode(u.Payload)
	if err != nil {
		return fmt.Errorf("update from %s: %w", u.Peer, err)
	}
	if err := v.vote.Add(ranks); err != nil {
		return fmt.Errorf("update from %s: %w: %w", u.Peer, ErrMalformed, err)
	}
	return nil
}

// RequireRankingFormat implements RankingFormatter.
func (v *Vote) RequireRankingFormat(f RankingFormat, bounds [][]uint32) {
	v.dec.requireFormat(f, bounds)
}

// Predecoder implements Predecoding.
func (v *Vote) Predecoder() *Predecoder { return v.dec.predecoder() }

// Len implements Aggregator.
func (v *Vote) Len() int { return v.vote.Voters() }

// Finalize implements Aggregator.
func (v *Vote) Finalize() ([]byte, error) {
	if v.vote.Voters() == 0 {
		return nil, ErrNoUpdates
	}
	order := make([][]uint32, len(v.spec.Layers()))
	for l := range order {
		order[l] = v.vote.Result(l, nil)
	}
	return v.spec.EncodeFRLModel(order), nil
}

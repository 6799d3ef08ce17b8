package rankvote

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

var (
	// ErrLayerCount: a voter's upload has the wrong number of layers.
	ErrLayerCount = errors.New("rankvote: wrong number of layers")
	// ErrShape: two votes over different layer sizes cannot be merged.
	ErrShape = errors.New("rankvote: votes have different layer sizes")
	// ErrTooManyVoters: the Borda sums would overflow even 64 bits.
	ErrTooManyVoters = errors.New("rankvote: too many voters")
)

// maxSum32 is the largest sum a 32-bit layer may reach; tests lower it.
var maxSum32 uint64 = math.MaxUint32

// Vote is the streaming Borda count of one round. Each voter adds one ranking
// per layer; the vote keeps, per edge, the sum of the positions the voters gave
// it, never the rankings themselves, so its memory is O(total edges) however
// many voters there are. Result orders a layer's edges by ascending sum, ties by
// edge index. Sums are additive: votes counted apart (on different goroutines,
// machines, or aggregation tree nodes) merge into the vote of all their voters.
//
// Sums are uint32 while they cannot overflow: a layer of n edges stays 32-bit
// while voters*(n-1) <= MaxUint32 (up to 18,260 voters for the 235,200-edge
// layer of the MNIST model, 858 for a 5M-edge layer), and is widened to uint64
// just before an Add or Merge would cross that bound. Reset goes back to 32-bit.
// Beyond the sums (4 bytes per edge, 12 once widened), a Vote keeps a bitset of
// its largest layer for Add and the Sorter scratch of Result (16 bytes per edge
// of the largest layer).
//
// A Vote is not safe for concurrent use.
type Vote struct {
	sizes  []int
	s32    [][]uint32 // sums of layer l while !wide[l]
	s64    [][]uint64 // sums of layer l while wide[l] (kept allocated once made)
	wide   []bool
	voters uint64
	seen   []uint64 // bitset scratch of Add
	sorter Sorter
}

// NewVote returns an empty vote over layers of the given sizes (edges per
// layer). It panics if a size is outside 0..MaxSize.
func NewVote(sizes []int) *Vote {
	v := &Vote{
		sizes: slices.Clone(sizes),
		s32:   make([][]uint32, len(sizes)),
		s64:   make([][]uint64, len(sizes)),
		wide:  make([]bool, len(sizes)),
	}
	largest := 0
	for l, n := range sizes {
		checkSize(n)
		v.s32[l] = make([]uint32, n)
		largest = max(largest, n)
	}
	v.seen = make([]uint64, (largest+63)>>6)
	return v
}

// Reset empties the vote for a new round, keeping its memory.
func (v *Vote) Reset() {
	for l := range v.sizes {
		clear(v.s32[l])
		v.wide[l] = false
	}
	v.voters = 0
}

// Voters is the number of voters counted (added or merged in) since the last Reset.
func (v *Vote) Voters() int { return int(v.voters) }

// Layers is the number of layers.
func (v *Vote) Layers() int { return len(v.sizes) }

// Size is the number of edges of a layer.
func (v *Vote) Size(layer int) int { return v.sizes[layer] }

// Add counts one voter: layers[l] is its ranking of layer l, the layer's edge
// indices ascending by score, lowest first. Every layer must be a permutation of
// 0..n-1; otherwise Add returns ErrLayerCount (wrapped) or an
// *InvalidRankingError naming the layer, and the vote is exactly as before.
// Add keeps no reference to layers.
func (v *Vote) Add(layers [][]uint32) error {
	if len(layers) != len(v.sizes) {
		return fmt.Errorf("%w: got %d, want %d", ErrLayerCount, len(layers), len(v.sizes))
	}
	for l, r := range layers {
		if len(r) != v.sizes[l] {
			return &InvalidRankingError{Layer: l, Reason: ReasonLength, Index: len(r), N: v.sizes[l]}
		}
	}
	if err := v.widen(v.voters + 1); err != nil {
		return err
	}
	// Checking and summing go together in one pass over each ranking (a separate
	// checking pass costs about 15% more on the MNIST model); a bad layer undoes
	// what was summed, so the vote is unchanged on error. Sums are modular, so
	// the undoing is exact.
	for l, r := range layers {
		var err *InvalidRankingError
		if v.wide[l] {
			err = addPositions(v.s64[l], r, v.seen)
		} else {
			err = addPositions(v.s32[l], r, v.seen)
		}
		if err != nil {
			for k := range l {
				if v.wide[k] {
					subPositions(v.s64[k], layers[k])
				} else {
					subPositions(v.s32[k], layers[k])
				}
			}
			err.Layer = l
			return err
		}
	}
	v.voters++
	return nil
}

// addValid is Add for a voter whose layers are already known to be
// permutations of the right sizes (a FilteredVote's stored rankings): the
// same sums, without the checks.
func (v *Vote) addValid(layers [][]uint32) error {
	if err := v.widen(v.voters + 1); err != nil {
		return err
	}
	for l, r := range layers {
		if v.wide[l] {
			sums := v.s64[l][:len(r)]
			for i, e := range r {
				sums[e] += uint64(i)
			}
		} else {
			sums := v.s32[l][:len(r)]
			for i, e := range r {
				sums[e] += uint32(i)
			}
		}
	}
	v.voters++
	return nil
}

// addPositions adds i to sums[r[i]] for every i, checking that r is a
// permutation of 0..len(sums)-1 (len(r) == len(sums) is the caller's check). On
// failure it takes back what it added and returns the error.
func addPositions[S uint32 | uint64](sums []S, r []uint32, seen []uint64) *InvalidRankingError {
	n := len(sums)
	seen = seen[:(n+63)>>6]
	clear(seen)
	r = r[:n]
	for i, e := range r {
		if uint(e) >= uint(len(sums)) {
			subPositions(sums, r[:i])
			return rangeError(i, e, n)
		}
		w := seen[e>>6]
		m := uint64(1) << (e & 63)
		if w&m != 0 {
			subPositions(sums, r[:i])
			return duplicateError(i, e, n)
		}
		seen[e>>6] = w | m
		sums[e] += S(i)
	}
	return nil
}

// subPositions takes back addPositions over the prefix r (values all valid).
func subPositions[S uint32 | uint64](sums []S, r []uint32) {
	for i, e := range r {
		sums[e] -= S(i)
	}
}

// widen makes 64-bit every layer whose sums could pass MaxUint32 with the
// given number of voters. The sums keep their values.
func (v *Vote) widen(voters uint64) error {
	for l, n := range v.sizes {
		if n < 2 {
			continue // every position is 0
		}
		hi, lo := bits.Mul64(voters, uint64(n-1))
		if hi != 0 {
			return fmt.Errorf("%w: %d voters over %d edges", ErrTooManyVoters, voters, n)
		}
		if lo > maxSum32 {
			v.widenLayer(l)
		}
	}
	return nil
}

// widenLayer moves the sums of a layer to 64 bits (no-op if they are already).
func (v *Vote) widenLayer(l int) {
	if v.wide[l] {
		return
	}
	s64 := growUint64(v.s64[l], v.sizes[l])
	for i, x := range v.s32[l] {
		s64[i] = uint64(x)
	}
	v.s64[l] = s64
	v.wide[l] = true
}

// Merge adds the sums and voters of other to v, as if every voter of other had
// been added to v. other is unchanged (it may be v itself). The votes must have
// the same layer sizes.
func (v *Vote) Merge(other *Vote) error {
	if !slices.Equal(v.sizes, other.sizes) {
		return fmt.Errorf("%w: %v and %v", ErrShape, v.sizes, other.sizes)
	}
	total, carry := bits.Add64(v.voters, other.voters, 0)
	if carry != 0 {
		return fmt.Errorf("%w: %d + %d voters", ErrTooManyVoters, v.voters, other.voters)
	}
	// Widening first is safe when other == v: it changes no value.
	if err := v.widen(total); err != nil {
		return err
	}
	for l := range v.sizes {
		if other.wide[l] {
			// A failed Add may have widened other below the bound.
			v.widenLayer(l)
		}
		switch {
		case other.wide[l]:
			dst, src := v.s64[l], other.s64[l]
			for i := range dst {
				dst[i] += src[i]
			}
		case v.wide[l]:
			dst, src := v.s64[l], other.s32[l]
			for i := range dst {
				dst[i] += uint64(src[i])
			}
		default:
			dst, src := v.s32[l], other.s32[l]
			for i := range dst {
				dst[i] += src[i]
			}
		}
	}
	v.voters = total
	return nil
}

// Sums copies the position sums of a layer into dst (resized to the layer's
// size, allocated if short) and returns it: dst[e] is the sum over the voters of
// the position of edge e.
func (v *Vote) Sums(layer int, dst []uint64) []uint64 {
	n := v.sizes[layer]
	dst = growUint64(dst, n)
	if v.wide[layer] {
		copy(dst, v.s64[layer])
		return dst
	}
	for i, x := range v.s32[layer] {
		dst[i] = uint64(x)
	}
	return dst
}

// Result writes into order (resized to the layer's size, allocated if short)
// the global ranking of a layer: its edges by ascending position sum, equal sums
// by ascending edge index. With no voters it is the identity.
func (v *Vote) Result(layer int, order []uint32) []uint32 {
	if v.wide[layer] {
		return v.sorter.ArgsortUint64(v.s64[layer], order)
	}
	return v.sorter.ArgsortUint32(v.s32[layer], order)
}

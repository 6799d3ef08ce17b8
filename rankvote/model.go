package rankvote

import (
	"fmt"
	"math"
)

// ScoresFromRanking turns a global ranking back into a layer's scores: the edge
// ranked i-th gets the i-th smallest initial score, scores[order[i]] =
// sortedInit[i]. sortedInit is the layer's initial score values in ascending
// order (the global model is always a permutation of them). scores is resized to
// len(order), allocated if short, and returned. order must be a permutation of
// 0..len(order)-1 (Validate); it panics if len(sortedInit) != len(order) or a
// value of order is out of range.
func ScoresFromRanking(order []uint32, sortedInit []float32, scores []float32) []float32 {
	if len(order) != len(sortedInit) {
		panic(fmt.Sprintf("rankvote: ScoresFromRanking: %d ranked edges, %d initial scores", len(order), len(sortedInit)))
	}
	scores = growFloat32(scores, len(order))
	for i, e := range order {
		scores[e] = sortedInit[i]
	}
	return scores
}

// KeepCount is how many of n edges a supermask keeps: n - floor((1-keepFrac)*n),
// the reference's rule (keepFrac 0.5 keeps n - floor(n/2), the larger half when
// n is odd). It panics unless 0 <= keepFrac <= 1.
func KeepCount(n int, keepFrac float64) int {
	if !(keepFrac >= 0 && keepFrac <= 1) {
		panic(fmt.Sprintf("rankvote: KeepCount: keep fraction %v outside [0, 1]", keepFrac))
	}
	drop := int(math.Floor((1 - keepFrac) * float64(n)))
	return n - min(max(drop, 0), n)
}

// MaskFromScores writes into mask (resized to len(scores), allocated if short)
// the supermask that keeps the `keep` edges with the largest |score|; among
// edges with equal |score| at the threshold, lower indices are kept first, so
// the mask is deterministic. -0 and +0 are equal; NaN counts as larger than
// +Inf. It panics unless 0 <= keep <= len(scores).
//
// The threshold is found by a radix select on the bit pattern of |score| (three
// counting passes over the scores, no sort and no allocation).
func MaskFromScores(scores []float32, keep int, mask []bool) []bool {
	n := len(scores)
	if keep < 0 || keep > n {
		panic(fmt.Sprintf("rankvote: MaskFromScores: keep %d of %d edges", keep, n))
	}
	mask = growBool(mask, n)
	switch keep {
	case 0:
		clear(mask)
		return mask
	case n:
		for i := range mask {
			mask[i] = true
		}
		return mask
	}
	t, need := selectAbs(scores, keep)
	for i, f := range scores {
		k := math.Float32bits(f) & 0x7fffffff
		on := k > t
		if k == t && need > 0 {
			on = true
			need--
		}
		mask[i] = on
	}
	return mask
}

// selectAbs returns the keep-th largest |score| bit pattern t (1 <= keep <=
// len(scores)) and how many of the edges equal to t are kept: keep minus the
// number above t.
func selectAbs(scores []float32, keep int) (t uint32, need int) {
	// |score| has 31 significant bits: digits of 10, 11 and 10 bits, high first.
	levels := [3]struct{ shift, width uint }{{21, 10}, {10, 11}, {0, 10}}
	var hist [1 << 11]uint32
	var prefix, prefixMask uint32
	rank := uint32(keep) // rank-th largest among the keys matching prefix
	for _, lv := range levels {
		dmask := uint32(1)<<lv.width - 1
		h := hist[:dmask+1]
		clear(h)
		for _, f := range scores {
			k := math.Float32bits(f) & 0x7fffffff
			if k&prefixMask == prefix {
				h[(k>>lv.shift)&dmask]++
			}
		}
		d := dmask
		for ; d > 0 && h[d] < rank; d-- {
			rank -= h[d]
		}
		prefix |= d << lv.shift
		prefixMask |= dmask << lv.shift
	}
	return prefix, int(rank)
}

func growFloat32(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func growBool(s []bool, n int) []bool {
	if cap(s) < n {
		return make([]bool, n)
	}
	return s[:n]
}

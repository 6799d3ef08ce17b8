package rankvote

import (
	"cmp"
	"fmt"
	"slices"
)

// Holder applies hysteresis to a layer's mask between two global rankings:
// an edge changes its mask state (kept or not) only if the new ranking puts
// it more than a margin inside the other state's positions, and as many
// edges leave the mask as enter it, the deepest first. See Hold.
//
// A Holder keeps scratch memory between calls and is not safe for
// concurrent use.
type Holder struct {
	prevPos, nextPos []uint32
	depth            []uint32
	out, in          []holdCand
	onList, offList  []uint32
}

type holdCand struct {
	edge, pos, depth uint32
}

// HoldStat counts what one Hold did.
type HoldStat struct {
	Proposed int // edges the new ranking moves across the mask's boundaries, each way (the smaller count)
	Deep     int // of those, edges past the margin, each way (the smaller count)
	Flipped  int // edges that left the mask (as many entered it)
}

// Hold returns, in out (resized, allocated if short), the ranking that
// follows next except at the mask's boundaries. on[i] tells whether the
// edge at position i of a global ranking is kept (both ends of the order
// for FRL's |score| mask: model.SupermaskLayer.On). prev is the previous
// global ranking, next the vote's.
//
//   - An edge kept under prev leaves the mask only if its position in next
//     is an unkept position more than margin positions from the nearest kept
//     one; an unkept edge enters only if its position in next is a kept
//     position more than margin from the nearest unkept one.
//   - Of the edges that qualify, as many leave as enter: the smaller count
//     of each side, deepest first (ties by position in next).
//   - The kept edges fill the kept positions and the others the unkept ones,
//     each in next's order.
//
// With margin 0 and balanced crossings Hold returns next itself (the same
// order): it only ever withholds crossings. The mask of the result differs
// from prev's only in the 2·Flipped edges that crossed by more than margin.
//
// prev and next must be permutations of 0..len(on)-1 (Validate); Hold
// panics on a length mismatch.
func (h *Holder) Hold(prev, next []uint32, on []bool, margin int, out []uint32) ([]uint32, HoldStat) {
	n := len(on)
	if len(prev) != n || len(next) != n {
		panic(fmt.Sprintf("rankvote: Hold: rankings of %d and %d edges, mask of %d positions", len(prev), len(next), n))
	}
	out = growUint32(out, n)
	h.prevPos = growUint32(h.prevPos, n)
	h.nextPos = growUint32(h.nextPos, n)
	for i, e := range prev {
		h.prevPos[e] = uint32(i)
	}
	for i, e := range next {
		h.nextPos[e] = uint32(i)
	}
	h.depth = boundaryDepth(on, growUint32(h.depth, n))
	h.out, h.in = h.out[:0], h.in[:0]
	proposedOut, proposedIn := 0, 0
	for e := range n {
		was, q := on[h.prevPos[e]], h.nextPos[e]
		if on[q] == was {
			continue
		}
		d := h.depth[q]
		if was {
			proposedOut++
		} else {
			proposedIn++
		}
		if int(d) <= margin {
			continue
		}
		c := holdCand{edge: uint32(e), pos: q, depth: d}
		if was {
			h.out = append(h.out, c)
		} else {
			h.in = append(h.in, c)
		}
	}
	st := HoldStat{Proposed: min(proposedOut, proposedIn), Deep: min(len(h.out), len(h.in))}
	k := st.Deep
	deepest := func(a, b holdCand) int {
		if c := cmp.Compare(b.depth, a.depth); c != 0 {
			return c
		}
		return cmp.Compare(a.pos, b.pos)
	}
	if len(h.out) > k {
		slices.SortFunc(h.out, deepest)
	}
	if len(h.in) > k {
		slices.SortFunc(h.in, deepest)
	}
	st.Flipped = k
	// Mark the crossing edges through nextPos's top bit while sorting
	// next into kept and unkept lists.
	const flip = 1 << 31
	for _, c := range h.out[:k] {
		h.nextPos[c.edge] |= flip
	}
	for _, c := range h.in[:k] {
		h.nextPos[c.edge] |= flip
	}
	h.onList, h.offList = h.onList[:0], h.offList[:0]
	for _, e := range next {
		kept := on[h.prevPos[e]]
		if h.nextPos[e]&flip != 0 {
			kept = !kept
		}
		if kept {
			h.onList = append(h.onList, e)
		} else {
			h.offList = append(h.offList, e)
		}
	}
	a, b := 0, 0
	for i, o := range on {
		if o {
			out[i] = h.onList[a]
			a++
		} else {
			out[i] = h.offList[b]
			b++
		}
	}
	return out, st
}

// boundaryDepth writes into depth, for every position i, the distance to
// the nearest position j with on[j] != on[i] (n when there is none), and
// returns it.
func boundaryDepth(on []bool, depth []uint32) []uint32 {
	n := len(on)
	last := -1 // the last position before i of the other state
	for i := range n {
		if i > 0 && on[i] != on[i-1] {
			last = i - 1
		}
		depth[i] = uint32(n)
		if last >= 0 {
			depth[i] = uint32(i - last)
		}
	}
	next := -1
	for i := n - 1; i >= 0; i-- {
		if i < n-1 && on[i] != on[i+1] {
			next = i + 1
		}
		if next >= 0 {
			depth[i] = min(depth[i], uint32(next-i))
		}
	}
	return depth
}

package rankvote

import (
	"slices"
	"testing"
)

// bothEnds is FRL's mask layout: the quarter at each end of the order kept.
func bothEnds(n int) []bool {
	on := make([]bool, n)
	for i := range on {
		on[i] = i < n/4 || i >= n-n/4
	}
	return on
}

// TestHoldRule checks Hold's rule on random rankings against a direct
// reading of its doc: the mask changes only in edges that crossed deeper
// than the margin, as many leave as enter, nobody shallower flips while a
// deeper one of its side is held, and each state's edges keep next's order.
func TestHoldRule(t *testing.T) {
	rng := newRand(1)
	var h Holder
	for trial := range 60 {
		n := 8 + rng.IntN(400)
		on := bothEnds(n)
		if trial%3 == 0 { // an arbitrary layout
			for i := range on {
				on[i] = rng.IntN(2) == 0
			}
		}
		prev := randPerm(rng, n)
		next := slices.Clone(prev)
		for range rng.IntN(n) { // a vote that moved some edges
			i, j := rng.IntN(n), rng.IntN(n)
			next[i], next[j] = next[j], next[i]
		}
		if trial%5 == 0 {
			next = randPerm(rng, n)
		}
		margin := rng.IntN(n/4 + 1)
		out, st := h.Hold(prev, next, on, margin, nil)
		if err := Validate(out, n); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		pos := func(r []uint32) []int {
			p := make([]int, n)
			for i, e := range r {
				p[e] = i
			}
			return p
		}
		pp, pn, po := pos(prev), pos(next), pos(out)
		depth := make([]int, n)
		for i := range n {
			depth[i] = n
			for j := range n {
				if on[j] != on[i] {
					depth[i] = min(depth[i], max(i-j, j-i))
				}
			}
		}
		left, entered := 0, 0
		minLeft, maxHeldOut := n+1, -1
		minIn, maxHeldIn := n+1, -1
		for e := range n {
			was, is, want := on[pp[e]], on[po[e]], on[pn[e]]
			d := depth[pn[e]]
			if was != is {
				if want != is || d <= margin {
					t.Fatalf("trial %d: edge %d changed state (next depth %d, margin %d, next wants %v)", trial, e, d, margin, want)
				}
				if was {
					left++
					minLeft = min(minLeft, d)
				} else {
					entered++
					minIn = min(minIn, d)
				}
			} else if want != was && d > margin {
				if was {
					maxHeldOut = max(maxHeldOut, d)
				} else {
					maxHeldIn = max(maxHeldIn, d)
				}
			}
		}
		if left != entered || left != st.Flipped {
			t.Fatalf("trial %d: %d left, %d entered, stat %+v", trial, left, entered, st)
		}
		if maxHeldOut > minLeft || maxHeldIn > minIn {
			t.Fatalf("trial %d: a deeper crossing was held (held %d/%d, flipped %d/%d)", trial, maxHeldOut, maxHeldIn, minLeft, minIn)
		}
		for _, state := range []bool{true, false} {
			var a, b []uint32
			for _, e := range next {
				if on[po[e]] == state {
					a = append(a, e)
				}
			}
			for i, e := range out {
				if on[i] == state {
					b = append(b, e)
				}
			}
			if !slices.Equal(a, b) {
				t.Fatalf("trial %d: the kept=%v edges are not in next's order", trial, state)
			}
		}
	}
}

// TestHoldZeroMarginBalanced: with margin 0 and a next that crosses as many
// edges each way (every permutation does, the mask's size being fixed),
// Hold is the identity on next.
func TestHoldZeroMarginIsNext(t *testing.T) {
	rng := newRand(2)
	var h Holder
	for range 20 {
		n := 50 + rng.IntN(200)
		on := bothEnds(n)
		prev, next := randPerm(rng, n), randPerm(rng, n)
		out, st := h.Hold(prev, next, on, 0, nil)
		if !slices.Equal(out, next) {
			t.Fatalf("n %d: margin 0 changed the vote's ranking (stat %+v)", n, st)
		}
		if st.Flipped != st.Proposed {
			t.Fatalf("stat %+v, want every proposed crossing flipped", st)
		}
	}
}

// TestHoldWithholdsShallowCrossings: a vote that moves edges just across
// a boundary changes nothing; one that moves them deep across does.
func TestHoldWithholdsShallowCrossings(t *testing.T) {
	n := 400
	on := bothEnds(n)
	prev := make([]uint32, n)
	for i := range prev {
		prev[i] = uint32(i)
	}
	// Swap k edges on each side of the low boundary (positions 100).
	swap := func(k, depth int) []uint32 {
		next := slices.Clone(prev)
		for i := range k {
			a, b := 100-depth-1-i, 100+depth+i
			next[a], next[b] = next[b], next[a]
		}
		return next
	}
	var h Holder
	out, st := h.Hold(prev, swap(5, 0), on, 10, nil)
	if !maskEqual(out, prev, on) || st.Flipped != 0 || st.Proposed != 5 {
		t.Fatalf("shallow swap: stat %+v, mask changed %v", st, !maskEqual(out, prev, on))
	}
	out, st = h.Hold(prev, swap(5, 20), on, 10, nil)
	if maskEqual(out, prev, on) || st.Flipped != 5 {
		t.Fatalf("deep swap: stat %+v", st)
	}
	if p := Validate(out, n); p != nil {
		t.Fatal(p)
	}
	defer func() {
		if recover() == nil {
			t.Error("length mismatch did not panic")
		}
	}()
	h.Hold(prev, prev[:10], on, 1, nil)
}

func maskEqual(a, b []uint32, on []bool) bool {
	ka, kb := map[uint32]bool{}, map[uint32]bool{}
	for i := range on {
		if on[i] {
			ka[a[i]], kb[b[i]] = true, true
		}
	}
	for e := range ka {
		if !kb[e] {
			return false
		}
	}
	return true
}

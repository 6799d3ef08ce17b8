package rankvote

import (
	"runtime"
	"sync"
)

// The robust votes (TrimmedVote, FilteredVote, ClampedVote) split the work of
// Result over workers goroutines. Every part computes integers of its own (a
// range of positions, of edges, or of voters), and the parts are combined by
// integer sums, so a result does not depend on the number of workers: it is
// the serial code's, bit for bit (TestParallelEqualsSerial).
//
// The sweeps over positions (the c-th time a sweep meets an edge is its c-th
// smallest position) are split by position range. The last range is swept
// backwards: there the c-th time an edge is met is its c-th largest
// position, which needs no count of the positions before the range. With 2
// parts that is all: each sweeps half the positions. With more, the middle
// ranges start from the counts of the ranges before them, which a counting
// pass over all but the last two ranges provides first.

// minParallel is the smallest layer whose work is split: below it the
// goroutines cost more than they save. (A variable: tests lower it.)
var minParallel = 1 << 14

// maxSweepParts bounds the parts of a sweep: each holds 24 bytes per edge.
const maxSweepParts = 8

// resolveWorkers is the number of workers to use: w, or GOMAXPROCS when w <= 0.
func resolveWorkers(w int) int {
	if w <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return w
}

// split returns the bounds of part i of [0, n) cut into parts nearly equal
// parts.
func split(n, parts, i int) (lo, hi int) {
	return n * i / parts, n * (i + 1) / parts
}

// parallel runs f(i, lo, hi) for the parts i of [0, n) cut into parts
// nearly equal ranges, part 0 on the calling goroutine, and waits for all.
func parallel(parts, n int, f func(i, lo, hi int)) {
	if parts <= 1 {
		f(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		lo, hi := split(n, parts, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, lo, hi)
		}()
	}
	lo, hi := split(n, parts, 0)
	f(0, lo, hi)
	wg.Wait()
}

// workParts is how many parts the work over a layer of n edges with k
// voters is split into: 1 for small layers.
func workParts(workers, n, k int) int {
	if n < minParallel {
		return 1
	}
	return max(min(resolveWorkers(workers), k), 1)
}

// rankSweep computes, per edge of a layer, the sum of the positions the
// voters gave it (full) and the weighted sum of its order statistics
// (trimmed: Σ_r wt[r] × its r-th smallest position, r from 1). It keeps its
// scratch across calls. The zero value is ready to use.
type rankSweep struct {
	parts [][]edgeAcc // the position ranges' sums, but the first's (in dst)
	cnt   [][]uint32  // the counting pass's counts
	back  []uint32    // wt indexed by the count from the top
}

// run writes the sums into dst (len n = len of every row) from the rows
// (each voter's ranking of the layer) with up to parts goroutines. wt has
// len(rows)+1 entries.
func (s *rankSweep) run(parts int, rows [][]uint32, wt []uint32, dst []edgeAcc) {
	n, k := len(dst), len(rows)
	clear(dst)
	parts = min(parts, maxSweepParts, n/64+1)
	if parts <= 1 {
		sweepForward(dst, rows, 0, n, wt)
		return
	}
	s.back = grow(s.back, k+1)
	for c := 1; c <= k; c++ {
		s.back[c] = wt[k-c+1]
	}
	for len(s.parts) < parts-1 {
		s.parts = append(s.parts, nil)
	}
	for i := range s.parts[:parts-1] {
		s.parts[i] = grow(s.parts[i], n)
	}
	acc := func(i int) []edgeAcc {
		if i == 0 {
			return dst
		}
		return s.parts[i-1]
	}
	// The counts of the ranges before each middle range.
	if parts > 2 {
		for len(s.cnt) < parts-2 {
			s.cnt = append(s.cnt, nil)
		}
		for i := range s.cnt[:parts-2] {
			s.cnt[i] = grow(s.cnt[i], n)
		}
		parallel(parts-2, parts-2, func(i, _, _ int) {
			c := s.cnt[i]
			clear(c)
			lo, hi := split(n, parts, i)
			for _, r := range rows {
				for _, e := range r[lo:hi] {
					c[e]++
				}
			}
		})
		parallel(parts, n, func(_, lo, hi int) {
			for i := 1; i < parts-1; i++ {
				a, prev := acc(i)[lo:hi], s.cnt[i-1][lo:hi]
				if i == 1 {
					for e := range a {
						a[e] = edgeAcc{count: prev[e]}
					}
					continue
				}
				before := acc(i - 1)[lo:hi]
				for e := range a {
					a[e] = edgeAcc{count: before[e].count + prev[e]}
				}
			}
		})
	}
	parallel(parts, parts, func(i, _, _ int) {
		lo, hi := split(n, parts, i)
		a := acc(i)
		switch {
		case i == parts-1:
			clear(a)
			sweepBackward(a, rows, lo, hi, s.back)
		default:
			// Part 0 starts from the cleared dst, a middle part from its
			// counts.
			sweepForward(a, rows, lo, hi, wt)
		}
	})
	parallel(parts, n, func(_, lo, hi int) {
		d := dst[lo:hi]
		for _, p := range s.parts[:parts-1] {
			for e, a := range p[lo:hi] {
				d[e].full += a.full
				d[e].trimmed += a.trimmed
			}
		}
	})
}

// sweepForward adds the positions lo..hi-1 of the rows to acc, the c-th
// meeting of an edge (counting on from acc's count) weighted by wt[c].
func sweepForward(acc []edgeAcc, rows [][]uint32, lo, hi int, wt []uint32) {
	for p := lo; p < hi; p++ {
		for _, r := range rows {
			a := &acc[r[p]]
			a.count++
			a.full += uint64(p)
			a.trimmed += uint64(wt[a.count]) * uint64(p)
		}
	}
}

// sweepBackward adds the positions hi-1 down to lo of the rows to acc, the
// c-th meeting of an edge from the top weighted by back[c].
func sweepBackward(acc []edgeAcc, rows [][]uint32, lo, hi int, back []uint32) {
	for p := hi - 1; p >= lo; p-- {
		for _, r := range rows {
			a := &acc[r[p]]
			a.count++
			a.full += uint64(p)
			a.trimmed += uint64(back[a.count]) * uint64(p)
		}
	}
}

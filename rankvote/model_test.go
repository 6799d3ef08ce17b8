package rankvote

import (
	"math"
	"slices"
	"sort"
	"testing"
)

func TestScoresFromRankingRoundTrip(t *testing.T) {
	rng := newRand(18)
	var s Sorter
	for _, n := range []int{0, 1, 2, 1000, 235200} {
		sortedInit := initScores(rng, n)
		slices.Sort(sortedInit)
		sortedInit = slices.Compact(sortedInit) // distinct values
		n = len(sortedInit)
		order := randPerm(rng, n)
		scores := ScoresFromRanking(order, sortedInit, nil)
		if got := s.Argsort(scores, nil); !slices.Equal(got, order) {
			t.Fatalf("n=%d: Argsort(ScoresFromRanking(order)) != order", n)
		}
		// The model is a permutation of the initial values.
		sorted := slices.Clone(scores)
		slices.Sort(sorted)
		if !slices.Equal(sorted, sortedInit) {
			t.Fatalf("n=%d: scores are not a permutation of sortedInit", n)
		}
	}
}

func TestKeepCount(t *testing.T) {
	cases := []struct {
		n    int
		frac float64
		want int
	}{
		{235200, 0.5, 117600}, {30000, 0.5, 15000}, {1000, 0.5, 500}, {5, 0.5, 3}, {1, 0.5, 1},
		{0, 0.5, 0}, {10, 0, 0}, {10, 1, 10}, {7, 0.3, 3}, {100, 0.3, 30}, {3, 0.999, 3},
	}
	for _, tc := range cases {
		if got := KeepCount(tc.n, tc.frac); got != tc.want {
			t.Errorf("KeepCount(%d, %v) = %d, want %d", tc.n, tc.frac, got, tc.want)
		}
	}
	for _, bad := range []float64{-0.1, 1.5, math.NaN()} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("KeepCount(10, %v) did not panic", bad)
				}
			}()
			KeepCount(10, bad)
		}()
	}
}

// naiveMask sorts by |score| descending, ties by index, and keeps the first keep.
func naiveMask(scores []float32, keep int) []bool {
	abs := func(f float32) uint32 { return math.Float32bits(f) & 0x7fffffff }
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return abs(scores[idx[a]]) > abs(scores[idx[b]]) })
	mask := make([]bool, len(scores))
	for _, i := range idx[:keep] {
		mask[i] = true
	}
	return mask
}

func TestMaskFromScores(t *testing.T) {
	rng := newRand(19)
	nan := float32(math.NaN())
	cases := []struct {
		name   string
		scores []float32
	}{
		{"empty", nil},
		{"one", []float32{-2}},
		{"signs tie", []float32{1, -1, 0.5, -0.5, 1, -1}},
		{"zeros", []float32{0, negZero, 0, negZero, 1e-45, -1e-45}},
		{"infinities and NaN", []float32{posInf, 3, nan, negInf, -3, 0}},
		{"init scores", initScores(rng, 30000)},
		{"few levels", func() []float32 {
			s := make([]float32, 20000)
			for i := range s {
				s[i] = float32(rng.IntN(9)-4) * 0.25
			}
			return s
		}()},
		{"all equal", slices.Repeat([]float32{0.125}, 1001)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.scores)
			keeps := []int{0, n, n / 2, KeepCount(n, 0.5), n / 3, min(1, n), max(n-1, 0)}
			for k := 0; k < 20 && n > 0; k++ {
				keeps = append(keeps, rng.IntN(n+1))
			}
			var mask []bool
			for _, keep := range keeps {
				mask = MaskFromScores(tc.scores, keep, mask)
				if want := naiveMask(tc.scores, keep); !slices.Equal(mask, want) {
					t.Fatalf("keep %d of %d: mask differs from the reference", keep, n)
				}
			}
		})
	}
}

func TestMaskFromScoresBothEnds(t *testing.T) {
	// FRL keeps |score|, so with scores symmetric around 0 the kept edges are
	// both ends of the ascending order, not its top half.
	scores := []float32{-4, -3, -2, -1, 1, 2, 3, 4}
	got := MaskFromScores(scores, KeepCount(8, 0.5), nil)
	want := []bool{true, true, false, false, false, false, true, true}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestMaskFromScoresPanics(t *testing.T) {
	for _, keep := range []int{-1, 4} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("keep %d of 3 did not panic", keep)
				}
			}()
			MaskFromScores([]float32{1, 2, 3}, keep, nil)
		}()
	}
}

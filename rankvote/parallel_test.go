package rankvote

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// nearRanking is base with a fraction frac of its positions each swapped
// with a position at most window away: a trained peer's ranking of a layer.
func nearRanking(rng *rand.Rand, base []uint32, window int, frac float64) []uint32 {
	r := slices.Clone(base)
	n := len(r)
	for range int(frac * float64(n)) {
		i := rng.IntN(n)
		j := min(max(i+rng.IntN(2*window+1)-window, 0), n-1)
		r[i], r[j] = r[j], r[i]
	}
	return r
}

// parallelInputs are the voter sets of TestParallelEqualsSerial: each voter
// is a ranking per layer.
func parallelInputs(sizes []int) map[string][][][]uint32 {
	rng := newRand(11)
	voters := func(k int, f func(l, j int) []uint32) [][][]uint32 {
		vs := make([][][]uint32, k)
		for j := range vs {
			vs[j] = make([][]uint32, len(sizes))
			for l := range sizes {
				vs[j][l] = f(l, j)
			}
		}
		return vs
	}
	base := make([][]uint32, len(sizes))
	for l, n := range sizes {
		base[l] = randPerm(rng, n)
	}
	reversed := func(l int) []uint32 {
		r := slices.Clone(base[l])
		slices.Reverse(r)
		return r
	}
	in := map[string][][][]uint32{
		"random-25": voters(25, func(l, _ int) []uint32 { return randPerm(rng, sizes[l]) }),
		"near-25":   voters(25, func(l, _ int) []uint32 { return nearRanking(rng, base[l], 50, 0.3) }),
		"one":       voters(1, func(l, _ int) []uint32 { return randPerm(rng, sizes[l]) }),
		"two":       voters(2, func(l, _ int) []uint32 { return randPerm(rng, sizes[l]) }),
		// identical voters: every edge's positions tie
		"identical-6": voters(6, func(l, _ int) []uint32 { return base[l] }),
		// 5 reversal attackers among 20 near-consensus voters (dropped)
		"reversal-5-of-25": voters(25, func(l, j int) []uint32 {
			if j%5 == 0 {
				return reversed(l)
			}
			return nearRanking(rng, base[l], 50, 0.3)
		}),
		// a colluding third that all sends the same ranking, far moves of a
		// few edges: kept, and clamped
		"collusion-8-of-24": voters(24, func(l, j int) []uint32 {
			if j < 8 {
				r := slices.Clone(base[l])
				for i := 0; i+len(r)/2 < len(r); i += 7 {
					r[i], r[i+len(r)/2] = r[i+len(r)/2], r[i]
				}
				return r
			}
			return nearRanking(rng, base[l], 200, 0.5)
		}),
		// an even count with half random: the filter's median splits them
		"half-random-10": voters(10, func(l, j int) []uint32 {
			if j%2 == 0 {
				return randPerm(rng, sizes[l])
			}
			return nearRanking(rng, base[l], 10, 0.1)
		}),
	}
	return in
}

// TestParallelEqualsSerial checks that the robust votes give, bit for bit,
// the serial result (1 worker) with 2, 3 and 7 workers: orders, distances,
// kept voters, limits, radii and clamped positions.
func TestParallelEqualsSerial(t *testing.T) {
	defer func(m int) { minParallel = m }(minParallel)
	sizes := []int{5000, 1300, 40, 1}
	minParallel = 64 // split every layer but the last two
	if !testing.Short() {
		// and once at the real threshold, with the MNIST model's first two
		// layers scaled down
		sizes = append(sizes, 40000)
	}
	type result struct {
		trimmed  [3][][]uint32
		filtered [][]uint32
		cons     [][]uint32
		dist     []float64
		kept     []bool
		limit    float64
		clamped  [][]uint32
		radius   []uint32
		pos      [][]float64
		cdist    []float64
	}
	run := func(voters [][][]uint32, workers int) result {
		var res result
		for f, frac := range []float64{0, 0.2, 0.5} {
			v := NewTrimmedVote(sizes, frac)
			v.SetWorkers(workers)
			for _, u := range voters {
				if err := v.Add(u); err != nil {
					t.Fatal(err)
				}
			}
			for l := range sizes {
				res.trimmed[f] = append(res.trimmed[f], v.Result(l, nil))
			}
		}
		fv := NewFilteredVote(sizes)
		fv.SetWorkers(workers)
		cv := NewClampedVote(sizes, DefaultClampAlpha)
		cv.SetWorkers(workers)
		for _, u := range voters {
			if err := fv.Add(u); err != nil {
				t.Fatal(err)
			}
			if err := cv.Add(u); err != nil {
				t.Fatal(err)
			}
		}
		res.cons = fv.Filter(nil)
		// twice: the second Result reuses the scratch of the first
		fv.Result(nil)
		res.filtered = fv.Result(nil)
		res.dist, res.kept, res.limit = fv.Distances(), fv.Kept(), fv.Limit()
		cv.Result(nil)
		res.clamped = cv.Result(nil)
		res.radius, res.cdist = cv.Radius(), cv.Distances()
		for l := range sizes {
			res.pos = append(res.pos, cv.Positions(l))
		}
		return res
	}
	bitsEqual := func(a, b []float64) bool {
		return slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
	}
	eq2 := func(a, b [][]uint32) bool { return slices.EqualFunc(a, b, slices.Equal) }
	for name, voters := range parallelInputs(sizes) {
		serial := run(voters, 1)
		for _, w := range []int{2, 3, 7} {
			t.Run(fmt.Sprintf("%s/workers=%d", name, w), func(t *testing.T) {
				got := run(voters, w)
				for f := range got.trimmed {
					if !eq2(got.trimmed[f], serial.trimmed[f]) {
						t.Errorf("TrimmedVote %d: order differs", f)
					}
				}
				if !eq2(got.cons, serial.cons) {
					t.Error("FilteredVote consensus differs")
				}
				if !eq2(got.filtered, serial.filtered) {
					t.Error("FilteredVote order differs")
				}
				if !bitsEqual(got.dist, serial.dist) || !bitsEqual(got.cdist, serial.cdist) {
					t.Errorf("distances differ: %v, want %v", got.dist, serial.dist)
				}
				if !slices.Equal(got.kept, serial.kept) || math.Float64bits(got.limit) != math.Float64bits(serial.limit) {
					t.Errorf("kept %v limit %v, want %v %v", got.kept, got.limit, serial.kept, serial.limit)
				}
				if !eq2(got.clamped, serial.clamped) {
					t.Error("ClampedVote order differs")
				}
				if !slices.Equal(got.radius, serial.radius) {
					t.Errorf("radius %v, want %v", got.radius, serial.radius)
				}
				if !slices.EqualFunc(got.pos, serial.pos, bitsEqual) {
					t.Error("ClampedVote positions differ")
				}
			})
		}
	}
}

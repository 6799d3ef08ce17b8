package rankvote

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
)

var (
	negZero = float32(math.Copysign(0, -1))
	posInf  = float32(math.Inf(1))
	negInf  = float32(math.Inf(-1))
)

func TestArgsortMatchesSliceStable(t *testing.T) {
	rng := newRand(1)
	gen := func(n int, f func(i int) float32) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = f(i)
		}
		return s
	}
	specials := []float32{0, negZero, 1, -1, posInf, negInf, math.MaxFloat32, -math.MaxFloat32,
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 0.5, -0.5}
	cases := []struct {
		name   string
		scores []float32
	}{
		{"n=0", nil},
		{"n=1", []float32{3}},
		{"n=2 descending", []float32{2, 1}},
		{"n=2 equal", []float32{7, 7}},
		{"zeros of both signs", []float32{0, negZero, 0, negZero, -1, 1}},
		{"infinities", []float32{posInf, 1, negInf, 0, posInf, negInf, -1}},
		{"specials", gen(5000, func(int) float32 { return specials[rng.IntN(len(specials))] })},
		{"all equal", gen(3000, func(int) float32 { return 0.25 })},
		{"all equal negative", gen(3000, func(int) float32 { return -3 })},
		{"few distinct", gen(20000, func(int) float32 { return float32(rng.IntN(7) - 3) })},
		{"negatives", gen(20000, func(int) float32 { return -rng.Float32() * 100 })},
		{"init scores", initScores(rng, 50000)},
		{"init scores with duplicates", func() []float32 {
			s := initScores(rng, 50000)
			for range 5000 {
				s[rng.IntN(len(s))] = s[rng.IntN(len(s))]
			}
			return s
		}()},
		{"wide range", gen(20000, func(int) float32 {
			return float32(math.Ldexp(rng.Float64()-0.5, rng.IntN(200)-100))
		})},
		{"only the low digit varies", gen(20000, func(int) float32 {
			return math.Float32frombits(0x3f800000 + rng.Uint32N(radixSize))
		})},
		{"only the middle digit varies", gen(20000, func(int) float32 {
			return math.Float32frombits(0xbf800000 + rng.Uint32N(64)<<radixBits)
		})},
		{"ascending", gen(10000, func(i int) float32 { return float32(i) - 5000 })},
		{"descending", gen(10000, func(i int) float32 { return 5000 - float32(i) })},
		{"bit patterns", gen(20000, func(int) float32 {
			f := math.Float32frombits(rng.Uint32())
			if f != f {
				return 0
			}
			return f
		})},
	}
	var s Sorter // shared across cases: reuse must not leak state
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := s.Argsort(tc.scores, nil)
			want := make([]int, len(tc.scores))
			for i := range want {
				want[i] = i
			}
			sort.SliceStable(want, func(a, b int) bool { return tc.scores[want[a]] < tc.scores[want[b]] })
			if len(got) != len(want) {
				t.Fatalf("len %d, want %d", len(got), len(want))
			}
			for i := range want {
				if int(got[i]) != want[i] {
					t.Fatalf("order[%d] = %d, want %d (%v vs %v)", i, got[i], want[i],
						tc.scores[got[i]], tc.scores[want[i]])
				}
			}
		})
	}
}

func TestArgsortNaN(t *testing.T) {
	nan := float32(math.NaN())
	negNaN := math.Float32frombits(0xffc00001)
	payloadNaN := math.Float32frombits(0x7f800001)
	scores := []float32{nan, 1, negNaN, posInf, negInf, payloadNaN, -1, 0}
	var s Sorter
	got := s.Argsort(scores, nil)
	// numbers in order, then every NaN after +Inf by index
	want := []uint32{4, 6, 7, 1, 3, 0, 2, 5}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFloatKeyOrder(t *testing.T) {
	vals := []float32{negInf, -math.MaxFloat32, -1, -math.SmallestNonzeroFloat32, 0,
		math.SmallestNonzeroFloat32, 1, math.MaxFloat32, posInf}
	for i := 1; i < len(vals); i++ {
		if FloatKey(vals[i-1]) >= FloatKey(vals[i]) {
			t.Errorf("FloatKey(%v) >= FloatKey(%v)", vals[i-1], vals[i])
		}
	}
	if FloatKey(negZero) != FloatKey(0) {
		t.Errorf("-0 and +0 differ")
	}
	if FloatKey(float32(math.NaN())) != math.MaxUint32 || FloatKey(posInf) == math.MaxUint32 {
		t.Errorf("NaN key")
	}
	rng := newRand(2)
	for range 100000 {
		a, b := math.Float32frombits(rng.Uint32()), math.Float32frombits(rng.Uint32())
		if a != a || b != b {
			continue
		}
		if (a < b) != (FloatKey(a) < FloatKey(b)) || (a == b) != (FloatKey(a) == FloatKey(b)) {
			t.Fatalf("keys of %v, %v disagree with the floats", a, b)
		}
	}
}

func TestArgsortUint32(t *testing.T) {
	rng := newRand(3)
	gen := func(n int, f func() uint32) []uint32 {
		s := make([]uint32, n)
		for i := range s {
			s[i] = f()
		}
		return s
	}
	cases := []struct {
		name string
		keys []uint32
	}{
		{"n=0", nil},
		{"n=1", []uint32{9}},
		{"all equal", gen(1000, func() uint32 { return 77 })},
		{"random", gen(30000, rng.Uint32)},
		{"small", gen(30000, func() uint32 { return rng.Uint32N(100) })},
		{"low digit constant", gen(30000, func() uint32 { return rng.Uint32N(5000) << radixBits })},
		{"middle digit constant", gen(30000, func() uint32 {
			return rng.Uint32N(radixSize) | rng.Uint32N(512)<<(2*radixBits)
		})},
		{"only top digit varies", gen(30000, func() uint32 { return rng.Uint32N(3) << 30 })},
		{"extremes", gen(5000, func() uint32 { return []uint32{0, math.MaxUint32, 1}[rng.IntN(3)] })},
		{"borda-like", gen(30000, func() uint32 { return 25*10000 + rng.Uint32N(1000000) })},
	}
	var s Sorter
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := s.ArgsortUint32(tc.keys, make([]uint32, 3)) // short order: must grow
			want := stableArgsort(len(tc.keys), func(a, b int) int {
				return cmpU64(uint64(tc.keys[a]), uint64(tc.keys[b]))
			})
			if !slices.Equal(got, want) {
				t.Fatalf("ArgsortUint32 differs from a stable sort")
			}
			k64 := make([]uint64, len(tc.keys))
			for i, k := range tc.keys {
				k64[i] = uint64(k) + 1<<40 // offset: exercises the narrowing
			}
			if got := s.ArgsortUint64(k64, nil); !slices.Equal(got, want) {
				t.Fatalf("ArgsortUint64 differs from a stable sort")
			}
		})
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestArgsortUint64Wide(t *testing.T) {
	rng := newRand(4)
	for _, tc := range []struct {
		name string
		f    func() uint64
	}{
		{"random", rng.Uint64},
		{"few values", func() uint64 { return []uint64{0, 1 << 63, math.MaxUint64, 1 << 33}[rng.IntN(4)] }},
		{"high bits only", func() uint64 { return rng.Uint64N(16) << 40 }},
		{"33 bits", func() uint64 { return rng.Uint64N(1 << 33) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{2, 3, 1000, 20001} {
				keys := make([]uint64, n)
				for i := range keys {
					keys[i] = tc.f()
				}
				keys[0], keys[n-1] = 0, 1<<40 // span at least 2^32: the wide path
				var s Sorter
				got := s.ArgsortUint64(keys, nil)
				want := stableArgsort(n, func(a, b int) int { return cmpU64(keys[a], keys[b]) })
				if !slices.Equal(got, want) {
					t.Fatalf("n=%d: differs from a stable sort", n)
				}
			}
		})
	}
}

func TestSorterReuseAndAllocs(t *testing.T) {
	rng := newRand(5)
	var s Sorter
	big := initScores(rng, 40000)
	order := make([]uint32, 0, len(big))
	for _, n := range []int{40000, 10, 0, 1, 39999, 40000, 123} {
		scores := big[:n]
		got := s.Argsort(scores, order)
		want := stableArgsort(n, func(a, b int) int { return cmpF(scores[a], scores[b]) })
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d: wrong order after reuse", n)
		}
	}
	keys := make([]uint32, len(big))
	for i := range keys {
		keys[i] = rng.Uint32()
	}
	allocs := testing.AllocsPerRun(5, func() {
		s.Argsort(big, order)
		s.ArgsortUint32(keys, order)
	})
	if allocs != 0 {
		t.Errorf("warm Sorter allocates %v times per call", allocs)
	}
}

func cmpF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestArgsortRandomSizes is a property test over many sizes and distributions.
func TestArgsortRandomSizes(t *testing.T) {
	rng := newRand(6)
	var s Sorter
	for trial := range 200 {
		n := rng.IntN(3000)
		scores := make([]float32, n)
		levels := 1 + rng.IntN(50)
		for i := range scores {
			switch trial % 3 {
			case 0:
				scores[i] = float32(rng.IntN(levels)) - float32(levels/2)
			case 1:
				scores[i] = float32(rng.NormFloat64())
			default:
				scores[i] = float32(rng.IntN(levels)) * 1e-30
			}
		}
		got := s.Argsort(scores, nil)
		want := stableArgsort(n, func(a, b int) int { return cmpF(scores[a], scores[b]) })
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d (n=%d) differs", trial, n)
		}
	}
}

func ExampleSorter_Argsort() {
	var s Sorter
	order := s.Argsort([]float32{0.3, -0.1, 0.3, 0}, nil)
	fmt.Println(order)
	// Output: [1 3 0 2]
}

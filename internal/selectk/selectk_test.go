package selectk

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func check[T uint32 | uint64 | float32 | float64](t *testing.T, base []T) {
	t.Helper()
	sorted := slices.Sorted(slices.Values(base))
	for k := range base {
		a := slices.Clone(base)
		Nth(a, k)
		if a[k] != sorted[k] {
			t.Fatalf("n=%d k=%d: %v, want %v", len(a), k, a[k], sorted[k])
		}
		for i := range a {
			if (i < k && a[i] > a[k]) || (i > k && a[i] < a[k]) {
				t.Fatalf("n=%d k=%d: not partitioned around a[k]", len(a), k)
			}
		}
	}
}

func TestNth(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 15, 16, 17, 64, 300} {
		u := make([]uint32, n)
		f := make([]float64, n)
		for i := range u {
			u[i] = uint32(rng.IntN(n/3 + 1)) // many repeats
			f[i] = rng.NormFloat64()
		}
		check(t, u)
		check(t, f)
		slices.Sort(u)
		check(t, u) // sorted input
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Nth out of range did not panic")
		}
	}()
	Nth([]float32{1}, 1)
}

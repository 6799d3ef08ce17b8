package rankvote

import (
	"math/rand/v2"
	"slices"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// randPerm is a uniformly random permutation of 0..n-1.
func randPerm(rng *rand.Rand, n int) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)
	}
	rng.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}

// initScores draws n scores like the model's initialisation, U(-1/sqrt(784), +1/sqrt(784)).
func initScores(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32((rng.Float64()*2 - 1) / 28)
	}
	return s
}

// stableArgsort is the reference: indices stably sorted by less.
func stableArgsort(n int, cmp func(a, b int) int) []uint32 {
	order := make([]uint32, n)
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortStableFunc(order, func(a, b uint32) int { return cmp(int(a), int(b)) })
	return order
}

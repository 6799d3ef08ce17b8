package data

import (
	"math"
	"math/rand/v2"
)

// sampleDirichlet fills p with a draw from the symmetric Dirichlet
// distribution Dir(alpha, ..., alpha): independent Gamma(alpha, 1) draws
// divided by their sum.
//
// The draws are kept as logarithms and normalised with the log-sum-exp
// shift, because for small alpha a Gamma(alpha, 1) draw is often far below
// the smallest float64 (the U^(1/alpha) factor), and dividing underflowed
// zeros would give NaN. The distribution is the same.
func sampleDirichlet(r *rand.Rand, alpha float64, p []float64) {
	top := math.Inf(-1)
	for i := range p {
		p[i] = logGamma(r, alpha)
		top = max(top, p[i])
	}
	if math.IsInf(top, -1) {
		// Every draw is zero even in log space, which takes an alpha near the
		// smallest float64. Dir(alpha) tends to a point mass on a uniformly
		// chosen coordinate as alpha -> 0; use that limit.
		clear(p)
		p[r.IntN(len(p))] = 1
		return
	}
	sum := 0.0
	for i, l := range p {
		p[i] = math.Exp(l - top)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
}

// logGamma returns the logarithm of a Gamma(alpha, 1) draw, alpha > 0.
// For alpha < 1 it uses the boost of Marsaglia and Tsang: if G ~ Gamma(alpha+1)
// and U ~ U(0,1), then G * U^(1/alpha) ~ Gamma(alpha).
func logGamma(r *rand.Rand, alpha float64) float64 {
	if alpha >= 1 {
		return math.Log(gammaMT(r, alpha))
	}
	return math.Log(gammaMT(r, alpha+1)) + math.Log(uniformPos(r))/alpha
}

// gammaMT draws from Gamma(alpha, 1), alpha >= 1, with the squeeze-and-reject
// method of Marsaglia and Tsang, "A simple method for generating gamma
// variables", ACM TOMS 26(3), 2000. The result is positive.
func gammaMT(r *rand.Rand, alpha float64) float64 {
	d := alpha - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		var x, v float64
		for {
			x = r.NormFloat64()
			v = 1 + c*x
			if v > 0 {
				break
			}
		}
		v = v * v * v
		u := uniformPos(r)
		x2 := x * x
		if u < 1-0.0331*x2*x2 || math.Log(u) < 0.5*x2+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// uniformPos returns a uniform draw from (0, 1], which has a finite logarithm.
func uniformPos(r *rand.Rand) float64 {
	return 1 - r.Float64()
}

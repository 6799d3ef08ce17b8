//go:build goexperiment.simd && amd64

package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestVectorAxpyMatchesPortable checks the AVX-512 axpy against gonum's
// kernel (the portable build's) bit for bit, on random rows of every length
// up to 700 and on rows of special values (signed zeros, subnormals,
// infinities, NaNs, values near overflow).
func TestVectorAxpyMatchesPortable(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU: the vector build runs the portable kernel")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-45, -1e-45, 1e-38, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 3e38, -3e38, 1, -1}
	draw := func(specials bool) float32 {
		if specials && rng.IntN(3) == 0 {
			return special[rng.IntN(len(special))]
		}
		return float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
	}
	for n := asmMin; n <= 700; n++ {
		for _, specials := range []bool{false, true} {
			x := make([]float32, n+rng.IntN(3))
			y := make([]float32, n)
			for i := range x {
				x[i] = draw(specials)
			}
			for i := range y {
				y[i] = draw(specials)
			}
			for _, a := range []float32{draw(false), draw(specials), 0, float32(math.Copysign(0, -1)), 1} {
				want, got := slices.Clone(y), slices.Clone(y)
				impl.Saxpy(n, a, x, 1, want, 1)
				axpy(a, x, got)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("n %d a %v: y[%d] = %v (%#x), gonum %v (%#x) from x %v y %v", n, a, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]), x[i], y[i])
					}
				}
			}
		}
	}
}

// TestVectorBuildSameModel checks that an evaluation gives the same bits
// with the vector kernels on and off (the simulator's golden traces, run
// with GOEXPERIMENT=simd, check whole runs).
func TestVectorBuildSameModel(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	_, test := loadMNIST(t)
	run := func() (int, float64) {
		eff, colsum := initialEffective(t)
		return NewEvaluator(lenet).Run(eff, colsum, test, 0, test.N)
	}
	vectorKernels = false
	c0, l0 := run()
	vectorKernels = true
	c1, l1 := run()
	if c0 != c1 || math.Float64bits(l0) != math.Float64bits(l1) {
		t.Fatalf("evaluation: %d correct, loss %v with vector kernels; %d, %v without", c1, l1, c0, l0)
	}
}

// TestVectorScoreUpdateMatchesPortable checks the AVX-512 score update
// against the scalar one bit for bit: scores, momenta, effective weights,
// the count above the band and the band's candidates, on rows of every
// length up to 300 and bands narrow, wide, empty and unbounded.
func TestVectorScoreUpdateMatchesPortable(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	rng := rand.New(rand.NewPCG(3, 4))
	f := func() float32 {
		if rng.IntN(50) == 0 {
			return []float32{0, float32(math.Copysign(0, -1)), 1e-45, float32(math.Inf(1))}[rng.IntN(4)]
		}
		return float32(rng.NormFloat64() * 0.05)
	}
	for n := 0; n <= 300; n++ {
		s, m, w, g := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range n {
			s[i], m[i], w[i], g[i] = f(), f(), f(), f()
		}
		mid := math.Float32bits(0.05)
		for _, b := range []band{
			{lo: mid - 1<<18, hi: mid + 1<<18},
			{lo: mid, hi: mid},
			{lo: 0, hi: math.MaxUint32},
			{lo: mid + 5, hi: mid - 5},
			{lo: 0, hi: 0, above: 7},
		} {
			type out struct {
				s, m, eff []float32
				bd        band
			}
			run := func(vec bool) out {
				vectorKernels = vec
				o := out{slices.Clone(s), slices.Clone(m), make([]float32, n), b}
				o.bd.cand = nil
				smUpdateRow(o.s, o.m, w, o.eff, g, 1000, 0.4, 0.9, 1e-4, &o.bd)
				return o
			}
			want, got := run(false), run(true)
			same := func(a, b []float32) bool {
				return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
			}
			if !same(got.s, want.s) || !same(got.m, want.m) || !same(got.eff, want.eff) {
				t.Fatalf("n %d band %+v: scores, momenta or weights differ", n, b)
			}
			if got.bd.above != want.bd.above || !slices.Equal(got.bd.cand, want.bd.cand) {
				t.Fatalf("n %d band %+v: above %d cand %d, want %d %d", n, b, got.bd.above, len(got.bd.cand), want.bd.above, len(want.bd.cand))
			}
		}
	}
}

// TestVectorSparseRowsMatchesPortable checks the first layer's vector
// kernel against axpy per pixel (the portable path) bit for bit, for every
// width from 32 to 400, zero and special pixel values included.
func TestVectorSparseRowsMatchesPortable(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	rng := rand.New(rand.NewPCG(7, 8))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-45, float32(math.Inf(1)), 3e38}
	draw := func() float32 {
		if rng.IntN(20) == 0 {
			return special[rng.IntN(len(special))]
		}
		return float32(rng.NormFloat64())
	}
	const rows = 50
	for O := asmMin; O <= 400; O++ {
		w := make([]float32, rows*O)
		for i := range w {
			w[i] = draw()
		}
		idx := make([]uint16, rng.IntN(2*rows))
		val := make([]float32, len(idx))
		for p := range idx {
			idx[p], val[p] = uint16(rng.IntN(rows)), draw()
		}
		z := make([]float32, O)
		for i := range z {
			z[i] = draw()
		}
		want, got := slices.Clone(z), slices.Clone(z)
		vectorKernels = false
		for p, i := range idx {
			axpy(val[p], w[int(i)*O:int(i)*O+O], want)
		}
		vectorKernels = true
		if !sparseRowsVector(got, w, O, idx, val) {
			t.Fatal("the vector kernel declined")
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("O %d: z[%d] = %v, want %v", O, i, got[i], want[i])
			}
		}
	}
}

// TestVectorScaleMatchesPortable checks the vector scaleInto bit for bit.
func TestVectorScaleMatchesPortable(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	rng := rand.New(rand.NewPCG(9, 9))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-45, float32(math.Inf(1)), float32(math.NaN()), 3e38}
	for n := 0; n <= 400; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			if rng.IntN(10) == 0 {
				x[i] = special[rng.IntN(len(special))]
			}
		}
		for _, a := range []float32{float32(rng.NormFloat64()), 0, float32(math.Copysign(0, -1)), 1e30} {
			want, got := make([]float32, n), make([]float32, n)
			vectorKernels = false
			scaleInto(a, x, want)
			vectorKernels = true
			scaleInto(a, x, got)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("n %d a %v: y[%d] = %v, want %v", n, a, i, got[i], want[i])
				}
			}
		}
	}
}

// TestVectorBuildSameLeNet: a LeNet client's local training (supermask and
// dense) and an evaluation give the same bits with and without the vector
// kernels (the convolutions, the pool's fully connected layer and the
// gradients run through sparseRows and axpy).
func TestVectorBuildSameLeNet(t *testing.T) {
	if !vectorKernels {
		t.Skip("no AVX-512 on this CPU")
	}
	defer func() { vectorKernels = true }()
	train, test := loadMNIST(t)
	net, err := NewConvSupermask(LeNet(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dense, err := NewConvDense(LeNet(), 1)
	if err != nil {
		t.Fatal(err)
	}
	samples := clientSamples()[:16]
	run := func() (scores, weights [][]float32, correct int, loss float64) {
		tr := net.NewTrainer(8)
		if err := tr.Load(initOrders(net)); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Train(train, samples, frlHyper(), rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		dt := dense.NewTrainer(8)
		if err := dt.Load(dense.Init); err != nil {
			t.Fatal(err)
		}
		h := frlHyper()
		h.LR = 0.01
		if _, err := dt.Train(train, samples, h, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		eff, _, err := net.EffectiveFromRanking(initOrders(net), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		correct, loss = NewConvEvaluator(LeNet()).Run(eff, nil, test, 0, 300)
		for _, s := range tr.Scores() {
			scores = append(scores, slices.Clone(s))
		}
		for _, w := range dt.Weights() {
			weights = append(weights, slices.Clone(w))
		}
		return scores, weights, correct, loss
	}
	vectorKernels = false
	s0, w0, c0, l0 := run()
	vectorKernels = true
	s1, w1, c1, l1 := run()
	for l := range s0 {
		if !slices.Equal(s0[l], s1[l]) || !slices.Equal(w0[l], w1[l]) {
			t.Fatalf("layer %d: the trained scores or weights differ between the builds' kernels", l)
		}
	}
	if c0 != c1 || math.Float64bits(l0) != math.Float64bits(l1) {
		t.Fatalf("evaluation: %d correct, loss %v with vector kernels; %d, %v without", c1, l1, c0, l0)
	}
}

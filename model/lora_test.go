package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// loraEff64 is the float64 reference of W0 + s·AᵀBt.
func loraEff64(n *LoRA, A, Bt [][]float64) [][]float64 {
	w := make([][]float64, len(n.Base))
	for l := range n.Base {
		in, out := n.Sizes[l], n.Sizes[l+1]
		r := len(A[l]) / in
		w[l] = make([]float64, in*out)
		for i := range in {
			for o := range out {
				v := float64(n.Base[l][i*out+o])
				for j := range r {
					v += float64(n.Scales[l]) * A[l][j*in+i] * Bt[l][j*out+o]
				}
				w[l][i*out+o] = v
			}
		}
	}
	return w
}

func to64(x [][]float32) [][]float64 {
	out := make([][]float64, len(x))
	for l, v := range x {
		for _, f := range v {
			out[l] = append(out[l], float64(f))
		}
	}
	return out
}

func randFactors(n *LoRA, ranks []int, seed uint64) (A, Bt [][]float32) {
	rng := rand.New(rand.NewPCG(seed, 77))
	for l, r := range ranks {
		in, out := n.Sizes[l], n.Sizes[l+1]
		a, b := make([]float32, r*in), make([]float32, r*out)
		for k := range a {
			a[k] = float32(rng.NormFloat64() * 0.3)
		}
		for k := range b {
			b[k] = float32(rng.NormFloat64() * 0.3)
		}
		A, Bt = append(A, a), append(Bt, b)
	}
	return A, Bt
}

// TestLoRAGradientMatchesFiniteDifferences checks the factor gradients
// (through the engine's forward and backward on the effective weights and the
// low-rank chain rule, sparse first layer and offset included) against
// central differences of a float64 reference, on layers under and over the
// 32 outputs where the assembly kernels take over, and for an adapter of a
// smaller rank than the network's.
func TestLoRAGradientMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		sizes, netRanks, ranks []int
	}{
		{[]int{12, 7, 5, 3}, []int{2, 3, 1}, []int{2, 3, 1}},
		{[]int{12, 40, 33, 3}, []int{3, 2, 2}, []int{3, 2, 2}},
		{[]int{12, 40, 33, 3}, []int{4, 4, 3}, []int{2, 0, 3}},
	} {
		checkLoRAGradient(t, tc.sizes, tc.netRanks, tc.ranks)
	}
}

func checkLoRAGradient(t *testing.T, sizes, netRanks, ranks []int) {
	in := tinyInputs(6, 12, 3, 1)
	d, err := NewDense(sizes, 3)
	if err != nil {
		t.Fatal(err)
	}
	alphas := []float64{2, 3, 1.5}
	n, err := NewLoRA(sizes, d.Init, netRanks, alphas)
	if err != nil {
		t.Fatal(err)
	}
	A, Bt := randFactors(n, ranks, 5)
	tr := n.NewTrainer(8)
	if err := tr.Load(A, Bt, true); err != nil {
		t.Fatal(err)
	}
	imgs := []int32{0, 1, 2, 3, 4}
	tr.forward(tr.e, in, imgs)
	tr.e.loss(in, imgs, true)
	tr.e.backward(tr.eff, in, imgs)
	tr.grads(tr.e, len(imgs), in.Offset)

	A64, B64 := to64(A), to64(Bt)
	loss := func() float64 { return refLoss(sizes, loraEff64(n, A64, B64), in, imgs) }
	const h = 1e-6
	check := func(what string, l int, x []float64, g []float32) {
		for k := range x {
			old := x[k]
			x[k] = old + h
			up := loss()
			x[k] = old - h
			down := loss()
			x[k] = old
			num := (up - down) / (2 * h)
			if math.Abs(num-float64(g[k])) > 1e-4+1e-3*math.Abs(num) {
				t.Fatalf("sizes %v ranks %v: layer %d %s[%d]: gradient %v, finite difference %v", sizes, ranks, l, what, k, g[k], num)
			}
		}
	}
	for l := range A {
		check("A", l, A64[l], tr.gA[l])
		check("Bt", l, B64[l], tr.gB[l])
	}
}

// TestLoRAEffective checks Effective against the float64 reference, and that
// a zero B leaves the base network unchanged.
func TestLoRAEffective(t *testing.T) {
	sizes := []int{12, 40, 33, 3}
	d, _ := NewDense(sizes, 3)
	n, err := NewLoRA(sizes, d.Init, []int{4, 4, 3}, []float64{8, 8, 6})
	if err != nil {
		t.Fatal(err)
	}
	A, Bt := randFactors(n, []int{4, 2, 3}, 9)
	eff, colsum, err := n.Effective(A, Bt, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := loraEff64(n, to64(A), to64(Bt))
	for l := range eff {
		for k := range eff[l] {
			if math.Abs(float64(eff[l][k])-ref[l][k]) > 1e-5 {
				t.Fatalf("layer %d weight %d: %v, want %v", l, k, eff[l][k], ref[l][k])
			}
		}
	}
	cs := ColumnSums(eff[0], 12, 40)
	for o := range cs {
		if math.Abs(float64(cs[o]-colsum[o])) > 1e-4 {
			t.Fatalf("column sum %d: %v, want %v", o, colsum[o], cs[o])
		}
	}
	A0 := n.InitA(1)
	B0 := [][]float32{make([]float32, 4*40), make([]float32, 4*33), make([]float32, 3*3)}
	eff, _, err = n.Effective(A0, B0, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for l := range eff {
		if !slices.Equal(eff[l], d.Init[l]) {
			t.Fatalf("layer %d: a zero B changed the base weights", l)
		}
	}
	// Rejections: a rank over the network's, a B of the wrong length.
	if _, _, err := n.Effective([][]float32{make([]float32, 5*12), B0[1], B0[2]}, [][]float32{make([]float32, 5*40), B0[1], B0[2]}, nil, nil); err == nil {
		t.Fatal("rank 5 adapter on a rank-4 layer accepted")
	}
	if _, _, err := n.Effective(A0, [][]float32{B0[0][:10], B0[1], B0[2]}, nil, nil); err == nil {
		t.Fatal("B of the wrong length accepted")
	}
}

func TestLoRAInitA(t *testing.T) {
	sizes := []int{20, 10, 4}
	d, _ := NewDense(sizes, 1)
	n4, _ := NewLoRA(sizes, d.Init, []int{4, 4}, []float64{1, 1})
	n2, _ := NewLoRA(sizes, d.Init, []int{2, 4}, []float64{1, 1})
	a4, a2 := n4.InitA(7), n2.InitA(7)
	if !slices.Equal(a4[0][:2*20], a2[0]) || !slices.Equal(a4[1], a2[1]) {
		t.Fatal("a smaller rank's A is not a prefix of a larger one's")
	}
	bound := float32(1 / math.Sqrt(20))
	for _, v := range a4[0] {
		if v < -bound || v > bound {
			t.Fatalf("A value %v outside ±%v", v, bound)
		}
	}
	if slices.Equal(n4.InitA(8)[0], a4[0]) {
		t.Fatal("different seeds gave the same A")
	}
}

// TestLoRATrainingLowersLossFrozenA trains B only (FFA) and both factors,
// checks the loss drops, A stays frozen in FFA mode, the base is untouched,
// and runs are deterministic.
func TestLoRATrainingLowersLossFrozenA(t *testing.T) {
	sizes := []int{30, 16, 8, 3}
	in := tinyInputs(64, 30, 3, 4)
	samples := make([]int32, 64)
	for i := range samples {
		samples[i] = int32(i)
	}
	d, _ := NewDense(sizes, 1)
	base := [][]float32{slices.Clone(d.Init[0]), slices.Clone(d.Init[1]), slices.Clone(d.Init[2])}
	n, err := NewLoRA(sizes, base, []int{4, 4, 3}, []float64{8, 8, 6})
	if err != nil {
		t.Fatal(err)
	}
	A0 := n.InitA(3)
	B0 := [][]float32{make([]float32, 4*16), make([]float32, 4*8), make([]float32, 3*3)}
	evalLoss := func(eff [][]float32, colsum []float32) float64 {
		_, l := NewEvaluator(sizes).Run(eff, colsum, in, 0, in.N)
		return l / float64(in.N)
	}
	h := Hyper{LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 20, Batch: 8}
	for _, trainA := range []bool{false, true} {
		run := func() ([][]float32, [][]float32, float64) {
			tr := n.NewTrainer(8)
			if err := tr.Load(A0, B0, trainA); err != nil {
				t.Fatal(err)
			}
			before := evalLoss(tr.Effective())
			if _, err := tr.Train(in, samples, h, rand.New(rand.NewPCG(1, 1))); err != nil {
				t.Fatal(err)
			}
			after := evalLoss(tr.Effective())
			if !(after < 0.8*before) {
				t.Fatalf("trainA=%v: loss %v -> %v, want a clear drop", trainA, before, after)
			}
			A, B := tr.Factors()
			return clone2(A), clone2(B), after
		}
		A1, B1, l1 := run()
		A2, B2, l2 := run()
		for l := range A1 {
			if !slices.Equal(A1[l], A2[l]) || !slices.Equal(B1[l], B2[l]) || l1 != l2 {
				t.Fatalf("trainA=%v: same seed, different factors", trainA)
			}
			if !trainA && !slices.Equal(A1[l], A0[l]) {
				t.Fatalf("layer %d: A moved with trainA=false", l)
			}
			if trainA && slices.Equal(A1[l], A0[l]) {
				t.Fatalf("layer %d: A did not move with trainA=true", l)
			}
		}
	}
	for l := range base {
		if !slices.Equal(base[l], d.Init[l]) {
			t.Fatalf("layer %d: training wrote to the frozen base", l)
		}
	}
}

func clone2(x [][]float32) [][]float32 {
	out := make([][]float32, len(x))
	for l := range x {
		out[l] = slices.Clone(x[l])
	}
	return out
}

package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMaskedLoRAGradientMatchesFiniteDifferences checks the straight-through
// score gradient of the masked adapter: one SGD step (no momentum, no weight
// decay) moves each score by -lr·dL/dF·c·sign(s), and dL/dF·c is the
// derivative of the loss with respect to the edge's mask value taken as a
// real number, which central differences of a float64 reference measure,
// for kept and dropped edges of both factors of every layer.
func TestMaskedLoRAGradientMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		sizes, ranks []int
		keep         float64
	}{
		{[]int{12, 7, 5, 3}, []int{2, 3, 1}, 0.5},
		{[]int{12, 40, 33, 3}, []int{3, 2, 2}, 0.3},
	} {
		checkMaskedLoRAGradient(t, tc.sizes, tc.ranks, tc.keep)
	}
}

func checkMaskedLoRAGradient(t *testing.T, sizes, ranks []int, keep float64) {
	in := tinyInputs(6, sizes[0], sizes[len(sizes)-1], 1)
	d, err := NewDense(sizes, 3)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMaskedLoRA(sizes, d.Init, ranks, []float64{2, 3, 1.5}, 11, keep)
	if err != nil {
		t.Fatal(err)
	}
	// A trained-looking model: a random ranking per chain layer.
	rng := rand.New(rand.NewPCG(4, 4))
	order := make([][]uint32, len(m.Mask.Layers))
	for c, ly := range m.Mask.Layers {
		order[c] = make([]uint32, ly.N())
		for k, p := range rng.Perm(ly.N()) {
			order[c][k] = uint32(p)
		}
	}
	tr := m.NewTrainer(8)
	if err := tr.Load(order); err != nil {
		t.Fatal(err)
	}
	before := make([][]float32, len(tr.scores))
	for c, s := range tr.scores {
		before[c] = slices.Clone(s)
	}
	// The mask values as reals, chain layout.
	mask := make([][]float64, len(m.Mask.Layers))
	for c, ly := range m.Mask.Layers {
		mask[c] = make([]float64, ly.N())
		kept := 0
		for e, s := range before[c] {
			if math.Float32bits(s)&^signBit >= ly.thr {
				mask[c][e] = 1
				kept++
			}
		}
		if kept != ly.Keep {
			t.Fatalf("chain layer %d keeps %d edges, want %d", c, kept, ly.Keep)
		}
	}
	factors := func() (A, Bt [][]float64) {
		for l, r := range ranks {
			I, O := sizes[l], sizes[l+1]
			a, b := make([]float64, r*I), make([]float64, r*O)
			wa, wb := m.Mask.Layers[2*l].W, m.Mask.Layers[2*l+1].W
			for i := range I {
				for j := range r {
					a[j*I+i] = mask[2*l][i*r+j] * float64(wa[i*r+j])
				}
			}
			for k := range b {
				b[k] = mask[2*l+1][k] * float64(wb[k])
			}
			A, Bt = append(A, a), append(Bt, b)
		}
		return A, Bt
	}
	imgs := []int32{0, 1, 2, 3, 4}
	loss := func() float64 {
		A, Bt := factors()
		return refLoss(sizes, loraEff64(m.LoRA, A, Bt), in, imgs)
	}
	// The model's effective weights match the reference.
	A64, B64 := factors()
	want := loraEff64(m.LoRA, A64, B64)
	got, _, err := m.EffectiveFromRanking(order)
	if err != nil {
		t.Fatal(err)
	}
	for l := range want {
		for k := range want[l] {
			if math.Abs(want[l][k]-float64(got[l][k])) > 1e-5 {
				t.Fatalf("layer %d weight %d: %v, reference %v", l, k, got[l][k], want[l][k])
			}
		}
	}

	e := tr.lt.e
	eff := tr.forward(e, in, imgs)
	e.loss(in, imgs, true)
	e.backward(eff, in, imgs)
	const lr = 1
	tr.update(e, len(imgs), in.Offset, lr)
	const h = 1e-6
	checked := 0
	for c := range mask {
		for k := range mask[c] {
			old := mask[c][k]
			mask[c][k] = old + h
			up := loss()
			mask[c][k] = old - h
			down := loss()
			mask[c][k] = old
			num := (up - down) / (2 * h)
			if before[c][k] < 0 {
				num = -num
			}
			g := -float64(tr.scores[c][k]-before[c][k]) / lr
			if math.Abs(num-g) > 1e-4+1e-3*math.Abs(num) {
				t.Fatalf("sizes %v ranks %v: chain layer %d edge %d (mask %v): score gradient %v, finite difference %v",
					sizes, ranks, c, k, old, g, num)
			}
			if num != 0 {
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("every gradient was zero: the check checked nothing")
	}
	// After the step the trainer's factors are the masks of its new scores.
	A, Bt := tr.Factors()
	for l, r := range ranks {
		I := sizes[l]
		thr := tr.threshold(2 * l)
		for i := range I {
			for j := range r {
				if w := maskedConst(tr.scores[2*l][i*r+j], m.Mask.Layers[2*l].W[i*r+j], thr); A[l][j*I+i] != w {
					t.Fatalf("layer %d A[%d,%d] = %v after the step, want %v", l, j, i, A[l][j*I+i], w)
				}
			}
		}
		thr = tr.threshold(2*l + 1)
		for k, s := range tr.scores[2*l+1] {
			if w := maskedConst(s, m.Mask.Layers[2*l+1].W[k], thr); Bt[l][k] != w {
				t.Fatalf("layer %d Bt[%d] = %v after the step, want %v", l, k, Bt[l][k], w)
			}
		}
	}
}

// TestMaskedLoRAChain: the factor chain of LeNet-300-100 at rank 4 and the
// supermask keep fractions.
func TestMaskedLoRAChain(t *testing.T) {
	if got, want := AdapterChain([]int{784, 300, 100, 10}, []int{4, 4, 4}), []int{784, 4, 300, 4, 100, 4, 10}; !slices.Equal(got, want) {
		t.Fatalf("chain %v, want %v", got, want)
	}
	sm, err := NewSupermaskKeep([]int{10, 10}, 1, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if sm.Layers[0].Keep != 20 {
		t.Fatalf("keep 0.2 of 100 edges keeps %d", sm.Layers[0].Keep)
	}
	a, _ := NewSupermask([]int{7, 9}, 1)
	b, _ := NewSupermaskKeep([]int{7, 9}, 1, 0.5)
	if a.Layers[0].Keep != 63-31 || b.Layers[0].Keep != a.Layers[0].Keep || !slices.Equal(a.Layers[0].On, b.Layers[0].On) {
		t.Fatalf("keep 0.5 differs from NewSupermask: %d, %d", a.Layers[0].Keep, b.Layers[0].Keep)
	}
	if _, err := NewSupermaskKeep([]int{7, 9}, 1, 0); err == nil {
		t.Fatal("keep 0 accepted")
	}
}

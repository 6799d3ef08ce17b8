package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// tinyInputs makes a small random data set in the sparse Inputs form.
func tinyInputs(n, dim, classes int, seed uint64) *Inputs {
	rng := rand.New(rand.NewPCG(seed, 9))
	in := &Inputs{N: n, Dim: dim, Classes: classes, Offset: -0.4, Ptr: make([]int32, n+1), Labels: make([]uint8, n)}
	for k := 0; k < n; k++ {
		for i := 0; i < dim; i++ {
			if rng.IntN(3) == 0 {
				in.Idx = append(in.Idx, uint16(i))
				in.Val = append(in.Val, float32(rng.Float64()*3))
			}
		}
		in.Ptr[k+1] = int32(len(in.Idx))
		in.Labels[k] = uint8(rng.IntN(classes))
	}
	return in
}

// dense input vector of image k
func denseX(in *Inputs, k int) []float64 {
	x := make([]float64, in.Dim)
	for i := range x {
		x[i] = float64(in.Offset)
	}
	for p := in.Ptr[k]; p < in.Ptr[k+1]; p++ {
		x[in.Idx[p]] += float64(in.Val[p])
	}
	return x
}

// refLoss is a float64 reference forward pass: mean cross-entropy of a batch.
func refLoss(sizes []int, w [][]float64, in *Inputs, imgs []int32) float64 {
	var sum float64
	for _, k := range imgs {
		h := denseX(in, int(k))
		for l := 0; l+1 < len(sizes); l++ {
			I, O := sizes[l], sizes[l+1]
			z := make([]float64, O)
			for i := 0; i < I; i++ {
				for o := 0; o < O; o++ {
					z[o] += h[i] * w[l][i*O+o]
				}
			}
			if l+2 < len(sizes) {
				for o := range z {
					z[o] = math.Max(z[o], 0)
				}
			}
			h = z
		}
		m := slices.Max(h)
		var s float64
		for _, v := range h {
			s += math.Exp(v - m)
		}
		sum += -(h[in.Labels[k]] - m - math.Log(s))
	}
	return sum / float64(len(imgs))
}

// TestGradientMatchesFiniteDifferences checks forward, loss, backward and
// rowGrad (including the sparse first layer with its constant offset)
// against central differences of a float64 reference.
func TestGradientMatchesFiniteDifferences(t *testing.T) {
	// Layers of 7 and 5 outputs run the scalar kernels, of 40 and 33 the
	// assembly ones (asmMin).
	for _, sizes := range [][]int{{12, 7, 5, 3}, {12, 40, 33, 3}} {
		checkGradient(t, sizes)
	}
}

func checkGradient(t *testing.T, sizes []int) {
	in := tinyInputs(6, 12, 3, 1)
	d, err := NewDense(sizes, 3)
	if err != nil {
		t.Fatal(err)
	}
	imgs := []int32{0, 1, 2, 3, 4}
	e := newEngine(sizes, 8)
	colsum := ColumnSums(d.Init[0], sizes[0], sizes[1])
	e.forward(d.Init, colsum, in, imgs)
	loss, _ := e.loss(in, imgs, true)
	e.backward(d.Init, in, imgs)

	w64 := make([][]float64, len(d.Init))
	for l, layer := range d.Init {
		for _, v := range layer {
			w64[l] = append(w64[l], float64(v))
		}
	}
	if ref := refLoss(sizes, w64, in, imgs); math.Abs(loss/float64(len(imgs))-ref) > 1e-5 {
		t.Fatalf("loss %v, float64 reference %v", loss/float64(len(imgs)), ref)
	}
	const h = 1e-6
	for l := range w64 {
		I, O := sizes[l], sizes[l+1]
		for i := 0; i < I; i++ {
			g := slices.Clone(e.rowGrad(l, i, len(imgs), in.Offset))
			for o := 0; o < O; o++ {
				old := w64[l][i*O+o]
				w64[l][i*O+o] = old + h
				up := refLoss(sizes, w64, in, imgs)
				w64[l][i*O+o] = old - h
				down := refLoss(sizes, w64, in, imgs)
				w64[l][i*O+o] = old
				num := (up - down) / (2 * h)
				if math.Abs(num-float64(g[o])) > 1e-4+1e-3*math.Abs(num) {
					t.Fatalf("layer %d edge (%d,%d): gradient %v, finite difference %v", l, i, o, g[o], num)
				}
			}
		}
	}
}

func TestSupermaskInit(t *testing.T) {
	net, err := NewSupermask([]int{20, 10, 4}, 7)
	if err != nil {
		t.Fatal(err)
	}
	for l, ly := range net.Layers {
		c := float32(math.Sqrt2 / math.Sqrt(float64(ly.In)))
		pos := 0
		for _, w := range ly.W {
			if w != c && w != -c {
				t.Fatalf("layer %d weight %v, want ±%v", l, w, c)
			}
			if w > 0 {
				pos++
			}
		}
		if pos == 0 || pos == len(ly.W) {
			t.Fatalf("layer %d: all weights have one sign", l)
		}
		bound := float32(1 / math.Sqrt(float64(ly.In)))
		if !slices.IsSorted(ly.Sorted) || ly.Sorted[0] < -bound || ly.Sorted[len(ly.Sorted)-1] > bound {
			t.Fatalf("layer %d: sorted scores out of order or outside ±%v", l, bound)
		}
		if want := ly.N() - ly.N()/2; ly.Keep != want {
			t.Fatalf("layer %d keeps %d, want %d", l, ly.Keep, want)
		}
		on := 0
		for i, k := range ly.On {
			if k {
				on++
			}
			// both ends of the order are on, the middle is off
			if i == 0 && !k || i == len(ly.On)-1 && !k {
				t.Fatalf("layer %d: an end of the ranking is masked off", l)
			}
		}
		if on != ly.Keep {
			t.Fatalf("layer %d: %d edges on, want %d", l, on, ly.Keep)
		}
	}
	again, _ := NewSupermask([]int{20, 10, 4}, 7)
	other, _ := NewSupermask([]int{20, 10, 4}, 8)
	if !slices.Equal(net.Layers[0].W, again.Layers[0].W) || !slices.Equal(net.Layers[0].Sorted, again.Layers[0].Sorted) {
		t.Fatal("same seed gave different networks")
	}
	if slices.Equal(net.Layers[0].Sorted, other.Layers[0].Sorted) {
		t.Fatal("different seeds gave the same scores")
	}
}

// TestSupermaskTrainerMask checks after every step that the tracked
// threshold is exactly the Keep-th largest |score| (the band never lies),
// and that the effective weights are w on kept edges and 0 elsewhere.
func TestSupermaskTrainerMask(t *testing.T) {
	sizes := []int{30, 16, 8, 3}
	in := tinyInputs(40, 30, 3, 2)
	net, err := NewSupermask(sizes, 5)
	if err != nil {
		t.Fatal(err)
	}
	tr := net.NewTrainer(8)
	orders := make([][]uint32, len(net.Layers))
	for l := range orders {
		orders[l] = net.Layers[l].InitOrder
	}
	if err := tr.Load(orders); err != nil {
		t.Fatal(err)
	}
	samples := make([]int32, 40)
	for i := range samples {
		samples[i] = int32(i)
	}
	h := Hyper{LR: 0.4, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 1, Batch: 8, Cosine: true}
	for step := 0; step < 30; step++ {
		if _, err := tr.Train(in, samples[step%5*8:step%5*8+8], h, rand.New(rand.NewPCG(uint64(step), 0))); err != nil {
			t.Fatal(err)
		}
		for l, ly := range net.Layers {
			abs := make([]uint32, ly.N())
			for i, v := range tr.scores[l] {
				abs[i] = math.Float32bits(v) &^ signBit
			}
			if want := selectKthLargest(slices.Clone(abs), ly.Keep); tr.thr[l] != want {
				t.Fatalf("step %d layer %d: threshold %x, want %x", step, l, tr.thr[l], want)
			}
			kept := 0
			for i, a := range abs {
				switch {
				case a >= tr.thr[l] && tr.eff[l][i] != ly.W[i]:
					t.Fatalf("step %d layer %d edge %d kept but effective weight %v", step, l, i, tr.eff[l][i])
				case a < tr.thr[l] && tr.eff[l][i] != 0:
					t.Fatalf("step %d layer %d edge %d dropped but effective weight %v", step, l, i, tr.eff[l][i])
				case a >= tr.thr[l]:
					kept++
				}
			}
			if kept != ly.Keep {
				t.Fatalf("step %d layer %d keeps %d edges, want %d", step, l, kept, ly.Keep)
			}
		}
	}
}

func TestSelectKthLargest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(300)
		a := make([]uint32, n)
		for i := range a {
			a[i] = uint32(rng.IntN(50)) // many duplicates
		}
		sorted := slices.Clone(a)
		slices.Sort(sorted)
		k := 1 + rng.IntN(n)
		if got, want := selectKthLargest(slices.Clone(a), k), sorted[n-k]; got != want {
			t.Fatalf("n=%d k=%d: got %d want %d", n, k, got, want)
		}
	}
}

func TestTrainingLowersLossAndIsDeterministic(t *testing.T) {
	sizes := []int{30, 16, 8, 3}
	in := tinyInputs(64, 30, 3, 4)
	samples := make([]int32, 64)
	for i := range samples {
		samples[i] = int32(i)
	}
	evalLoss := func(eff [][]float32, colsum []float32) float64 {
		_, l := NewEvaluator(sizes).Run(eff, colsum, in, 0, in.N)
		return l / float64(in.N)
	}
	d, _ := NewDense(sizes, 1)
	dt := NewDenseTrainer(sizes, 8)
	if err := dt.Load(d.Init); err != nil {
		t.Fatal(err)
	}
	before := evalLoss(d.Init, ColumnSums(d.Init[0], 30, 16))
	h := Hyper{LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 20, Batch: 8}
	if _, err := dt.Train(in, samples, h, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	after := evalLoss(dt.Weights(), ColumnSums(dt.Weights()[0], 30, 16))
	if !(after < 0.8*before) {
		t.Fatalf("dense training: loss %v -> %v, want a clear drop", before, after)
	}

	net, _ := NewSupermask(sizes, 1)
	orders := make([][]uint32, len(net.Layers))
	for l := range orders {
		orders[l] = net.Layers[l].InitOrder
	}
	run := func() ([][]float32, float64) {
		tr := net.NewTrainer(8)
		if err := tr.Load(orders); err != nil {
			t.Fatal(err)
		}
		before := evalLoss(tr.eff, tr.colsum)
		h := Hyper{LR: 0.4, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 20, Batch: 8, Cosine: true}
		if _, err := tr.Train(in, samples, h, rand.New(rand.NewPCG(3, 3))); err != nil {
			t.Fatal(err)
		}
		after := evalLoss(tr.eff, tr.colsum)
		if !(after < 0.9*before) {
			t.Fatalf("supermask training: loss %v -> %v, want a drop", before, after)
		}
		out := make([][]float32, len(tr.scores))
		for l := range out {
			out[l] = slices.Clone(tr.scores[l])
		}
		return out, after
	}
	s1, l1 := run()
	s2, l2 := run()
	for l := range s1 {
		if !slices.Equal(s1[l], s2[l]) {
			t.Fatal("same seed and data gave different scores")
		}
	}
	if l1 != l2 {
		t.Fatalf("same run, different loss: %v vs %v", l1, l2)
	}
}

func TestHyperValidate(t *testing.T) {
	good := Hyper{LR: 0.1, Momentum: 0.9, Epochs: 1, Batch: 8}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, h := range []Hyper{
		{LR: 0, Epochs: 1, Batch: 1},
		{LR: math.NaN(), Epochs: 1, Batch: 1},
		{LR: 0.1, Momentum: 1, Epochs: 1, Batch: 1},
		{LR: 0.1, WeightDecay: -1, Epochs: 1, Batch: 1},
		{LR: 0.1, Epochs: 0, Batch: 1},
		{LR: 0.1, Epochs: 1, Batch: 0},
	} {
		if h.Validate() == nil {
			t.Errorf("%+v accepted", h)
		}
	}
	if lr := (Hyper{LR: 0.4, Epochs: 2, Cosine: true}).EpochLR(1); math.Abs(lr-0.2) > 1e-12 {
		t.Fatalf("cosine epoch 1 of 2: lr %v, want 0.2", lr)
	}
}

// TestFullSelectMatchesBand: tracking the threshold in a band gives exactly
// the scores of selecting it over all scores at every step.
func TestFullSelectMatchesBand(t *testing.T) {
	sizes := []int{30, 40, 8, 3}
	in := tinyInputs(48, 30, 3, 6)
	net, _ := NewSupermask(sizes, 2)
	orders := make([][]uint32, len(net.Layers))
	for l := range orders {
		orders[l] = net.Layers[l].InitOrder
	}
	samples := make([]int32, 48)
	for i := range samples {
		samples[i] = int32(i)
	}
	h := Hyper{LR: 0.4, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 3, Batch: 8, Cosine: true}
	var got [2][][]float32
	for k, full := range []bool{false, true} {
		tr := net.NewTrainer(8)
		tr.FullSelect = full
		if err := tr.Load(orders); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Train(in, samples, h, rand.New(rand.NewPCG(5, 5))); err != nil {
			t.Fatal(err)
		}
		for _, s := range tr.Scores() {
			got[k] = append(got[k], slices.Clone(s))
		}
	}
	for l := range got[0] {
		if !slices.Equal(got[0][l], got[1][l]) {
			t.Fatalf("layer %d: band tracking and full selection trained different scores", l)
		}
	}
}

// TestDivergedModelHasFiniteLoss: evaluation of a model whose weights
// overflowed reports the capped loss, not NaN.
func TestDivergedModelHasFiniteLoss(t *testing.T) {
	sizes := []int{12, 7, 3}
	in := tinyInputs(10, 12, 3, 1)
	d, _ := NewDense(sizes, 1)
	d.Init[0][0] = float32(math.Inf(1))
	d.Init[0][1] = float32(math.Inf(-1))
	_, loss := NewEvaluator(sizes).Run(d.Init, ColumnSums(d.Init[0], 12, 7), in, 0, in.N)
	if math.IsNaN(loss) || math.IsInf(loss, 0) || loss <= 0 {
		t.Fatalf("loss of a diverged model: %v, want finite and positive", loss)
	}
}

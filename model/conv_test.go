package model

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The convolutional layers' gradients against central finite differences
// of an independent float64 implementation of the same network (convRefLoss:
// plain loops over kernel offsets, no chunks, no sparse lists), in the three
// forms the tasks use: the engine's gradient of the effective weights, a
// dense trainer's SGD step (FedAvg) and a supermask trainer's score step
// through the straight-through estimator (FRL).

// smallArch has every operation: two convolutions (one with several input
// channels), a max-pool with a remainder row, and two fully connected
// layers.
func smallArch() ConvArch {
	return ConvArch{Name: "small", H: 7, W: 8, C: 2, Ops: []Op{
		{Kind: OpConv, Out: 3, Size: 2},
		{Kind: OpConv, Out: 4, Size: 3},
		{Kind: OpPool, Size: 2},
		{Kind: OpFC, Out: 5},
		{Kind: OpFC, Out: 3},
	}}
}

// randomInputs makes n images of dim features (about a third background,
// which is the offset, if background) and labels below classes.
//
// Background makes patches alike: a patch of background gives the same
// output at every pixel, and a convolution over a patch of such ReLU
// zeros has a pre-activation of exactly zero, where the ReLU has no
// derivative and a finite difference sees half its slope. The checks whose
// weights are signed constants, and so make such patches likely, use
// images without background.
func randomInputs(n, dim, classes int, seed uint64, background bool) *Inputs {
	rng := rand.New(rand.NewPCG(seed, 7))
	in := &Inputs{N: n, Dim: dim, Classes: classes, Offset: -0.4, Ptr: make([]int32, n+1)}
	for k := 0; k < n; k++ {
		for i := 0; i < dim; i++ {
			if !background || rng.IntN(3) > 0 {
				in.Idx = append(in.Idx, uint16(i))
				in.Val = append(in.Val, float32(rng.Float64()*2.5))
			}
		}
		in.Ptr[k+1] = int32(len(in.Idx))
		in.Labels = append(in.Labels, uint8(rng.IntN(classes)))
	}
	return in
}

// denseImage is image k of in as the engine sees it.
func denseImage(in *Inputs, k int) []float64 {
	x := make([]float32, in.Dim)
	fill(x, in.Offset)
	for p := in.Ptr[k]; p < in.Ptr[k+1]; p++ {
		x[in.Idx[p]] = in.Val[p] + in.Offset
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// convRefOps applies operations lo..hi-1 of plan to a, in float64,
// written from the definitions.
func convRefOps(plan []opPlan, w [][]float64, a []float64, lo, hi int) []float64 {
	for _, p := range plan[lo:hi] {
		out := make([]float64, p.outLen())
		switch p.Kind {
		case OpConv:
			K := p.Size
			wl := w[p.layer]
			for oy := 0; oy < p.oh; oy++ {
				for ox := 0; ox < p.ow; ox++ {
					for co := 0; co < p.oc; co++ {
						var z float64
						for ky := 0; ky < K; ky++ {
							for kx := 0; kx < K; kx++ {
								for ci := 0; ci < p.ic; ci++ {
									z += a[((oy+ky)*p.iw+ox+kx)*p.ic+ci] * wl[((ky*K+kx)*p.ic+ci)*p.oc+co]
								}
							}
						}
						out[(oy*p.ow+ox)*p.oc+co] = math.Max(z, 0)
					}
				}
			}
		case OpPool:
			S := p.Size
			for oy := 0; oy < p.oh; oy++ {
				for ox := 0; ox < p.ow; ox++ {
					for c := 0; c < p.oc; c++ {
						m := math.Inf(-1)
						for dy := 0; dy < S; dy++ {
							for dx := 0; dx < S; dx++ {
								m = math.Max(m, a[((oy*S+dy)*p.iw+ox*S+dx)*p.ic+c])
							}
						}
						out[(oy*p.ow+ox)*p.oc+c] = m
					}
				}
			}
		case OpFC:
			wl := w[p.layer]
			for o := range out {
				var z float64
				for i, v := range a {
					z += v * wl[i*p.oc+o]
				}
				if p.relu {
					z = math.Max(z, 0)
				}
				out[o] = z
			}
		}
		a = out
	}
	return a
}

// convRefCE is the cross-entropy of logits a for label y.
func convRefCE(a []float64, y int) float64 {
	m := slices.Max(a)
	var se float64
	for _, v := range a {
		se += math.Exp(v - m)
	}
	return -(a[y] - m - math.Log(se))
}

// convRefLoss is the mean cross-entropy of the images under weights w, in
// float64.
func convRefLoss(arch ConvArch, w [][]float64, in *Inputs, imgs []int) float64 {
	plan, err := arch.plan()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, k := range imgs {
		sum += convRefCE(convRefOps(plan, w, denseImage(in, k), 0, len(plan)), int(in.Labels[k]))
	}
	return sum / float64(len(imgs))
}

// convFDGrad is the central difference of convRefLoss in weight (l, e); the
// operations before layer l's run once.
func convFDGrad(arch ConvArch, w [][]float64, in *Inputs, imgs []int, l, e int) float64 {
	const h = 1e-6
	plan, err := arch.plan()
	if err != nil {
		panic(err)
	}
	k := 0
	for plan[k].layer != l {
		k++
	}
	old := w[l][e]
	var up, down float64
	for _, img := range imgs {
		a := convRefOps(plan, w, denseImage(in, img), 0, k)
		y := int(in.Labels[img])
		w[l][e] = old + h
		up += convRefCE(convRefOps(plan, w, a, k, len(plan)), y)
		w[l][e] = old - h
		down += convRefCE(convRefOps(plan, w, a, k, len(plan)), y)
		w[l][e] = old
	}
	return (up - down) / (2 * h * float64(len(imgs)))
}

// checkConvGrad compares an analytic gradient with the finite difference.
func checkConvGrad(t *testing.T, what string, l, e int, got float32, want float64) {
	t.Helper()
	if d := math.Abs(float64(got) - want); d > 2e-4+2e-3*math.Abs(want) || math.IsNaN(float64(got)) {
		t.Errorf("%s: layer %d edge %d: gradient %g, finite difference %g", what, l, e, got, want)
	}
}

// engineGrads runs the engine on the batch and returns the full gradient of
// every weight layer.
func engineGrads(arch ConvArch, w [][]float32, in *Inputs, imgs []int32) (logits []float32, g [][]float32) {
	e := newConvEngine(arch, len(imgs))
	e.forward(w, nil, in, imgs)
	e.loss(in, imgs, true)
	logits = slices.Clone(e.act[len(e.plan)][:len(imgs)*arch.Classes()])
	e.backward(w, in, imgs)
	shapes, _ := arch.Shapes()
	for l, sh := range shapes {
		gl := make([]float32, sh[0]*sh[1])
		for i := 0; i < sh[0]; i++ {
			copy(gl[i*sh[1]:], e.rowGrad(l, i, len(imgs), in.Offset))
		}
		g = append(g, gl)
	}
	return logits, g
}

func randomWeights(arch ConvArch, seed uint64) [][]float32 {
	shapes, err := arch.Shapes()
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	var w [][]float32
	for _, sh := range shapes {
		wl := make([]float32, sh[0]*sh[1])
		for i := range wl {
			wl[i] = float32(rng.NormFloat64() * 1.2 / math.Sqrt(float64(sh[0])))
		}
		w = append(w, wl)
	}
	return w
}

func TestConvArchShapes(t *testing.T) {
	sh, err := LeNet().Shapes()
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{9, 32}, {288, 64}, {9216, 128}, {128, 10}}
	if !slices.Equal(sh, want) {
		t.Fatalf("LeNet shapes %v, want %v", sh, want)
	}
	net, err := NewConvSupermask(LeNet(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if net.Params() != 288+18432+1179648+1280 {
		t.Errorf("LeNet has %d edges", net.Params())
	}
	for l, ly := range net.Layers {
		if ly.Keep != ly.N()-ly.N()/2 {
			t.Errorf("layer %d keeps %d of %d", l, ly.Keep, ly.N())
		}
		if c := float32(math.Sqrt2 / math.Sqrt(float64(ly.In))); ly.C != c {
			t.Errorf("layer %d: |w| = %v, want sqrt(2/fan_in) = %v", l, ly.C, c)
		}
	}
	for _, bad := range []ConvArch{
		{Name: "empty", H: 4, W: 4, C: 1},
		{Name: "no fc last", H: 4, W: 4, C: 1, Ops: []Op{{Kind: OpConv, Out: 2, Size: 3}}},
		{Name: "kernel too large", H: 4, W: 4, C: 1, Ops: []Op{{Kind: OpConv, Out: 2, Size: 5}, {Kind: OpFC, Out: 2}}},
		{Name: "conv after fc", H: 4, W: 4, C: 1, Ops: []Op{{Kind: OpFC, Out: 4}, {Kind: OpConv, Out: 2, Size: 1}, {Kind: OpFC, Out: 2}}},
		{Name: "zero input", H: 0, W: 4, C: 1, Ops: []Op{{Kind: OpFC, Out: 2}}},
	} {
		if _, err := bad.Shapes(); err == nil {
			t.Errorf("%s: no error", bad.Name)
		}
		if _, err := NewConvSupermask(bad, 1); err == nil {
			t.Errorf("%s: NewConvSupermask accepted it", bad.Name)
		}
	}
}

// TestConvGradientsMatchFiniteDifferences checks every weight of the small
// network: the forward pass against the float64 reference, then the
// gradient of each edge.
func TestConvGradientsMatchFiniteDifferences(t *testing.T) {
	arch := smallArch()
	in := randomInputs(3, arch.InputDim(), arch.Classes(), 1, true)
	imgs, imgs64 := []int32{0, 1, 2}, []int{0, 1, 2}
	w := randomWeights(arch, 2)
	w64 := to64(w)
	logits, g := engineGrads(arch, w, in, imgs)
	// Forward: the loss from the engine's logits against the reference.
	e := newConvEngine(arch, 3)
	e.forward(w, nil, in, imgs)
	sum, _ := e.loss(in, imgs, false)
	if ref := convRefLoss(arch, w64, in, imgs64); math.Abs(sum/3-ref) > 1e-5*math.Max(1, ref) {
		t.Fatalf("loss %v, reference %v (logits %v)", sum/3, ref, logits)
	}
	nonzero := 0
	for l := range g {
		for e := range g[l] {
			fd := convFDGrad(arch, w64, in, imgs64, l, e)
			checkConvGrad(t, "engine", l, e, g[l][e], fd)
			if fd != 0 {
				nonzero++
			}
		}
	}
	if total := len(g[0]) + len(g[1]) + len(g[2]) + len(g[3]); nonzero < total/2 {
		t.Errorf("only %d of %d gradients are non-zero: the check is weak", nonzero, total)
	}
}

// oneStep is the local-training setting whose single step moves each
// parameter by exactly minus its gradient: lr 1, no momentum, no decay,
// one epoch of one batch.
func oneStep(batch int) Hyper {
	return Hyper{LR: 1, Epochs: 1, Batch: batch}
}

// TestConvDenseStepMatchesFiniteDifferences: a dense (FedAvg) trainer's
// step on the small network moves each weight by minus its gradient.
func TestConvDenseStepMatchesFiniteDifferences(t *testing.T) {
	arch := smallArch()
	in := randomInputs(4, arch.InputDim(), arch.Classes(), 3, true)
	net, err := NewConvDense(arch, 5)
	if err != nil {
		t.Fatal(err)
	}
	w0 := randomWeights(arch, 4)
	tr := net.NewTrainer(4)
	if err := tr.Load(w0); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Train(in, []int32{0, 1, 2, 3}, oneStep(4), rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	w64 := to64(w0)
	for l, wl := range tr.Weights() {
		for e := range wl {
			checkConvGrad(t, "dense step", l, e, w0[l][e]-wl[e], convFDGrad(arch, w64, in, []int{0, 1, 2, 3}, l, e))
		}
	}
}

// TestConvSupermaskStepMatchesFiniteDifferences: a supermask trainer's step
// moves each score by minus dL/dw_eff · w · sign(score), the
// straight-through gradient, with dL/dw_eff the finite difference at the
// model's effective weights (w on kept edges, 0 on the others).
func TestConvSupermaskStepMatchesFiniteDifferences(t *testing.T) {
	arch := smallArch()
	in := randomInputs(4, arch.InputDim(), arch.Classes(), 6, false)
	net, err := NewConvSupermask(arch, 7)
	if err != nil {
		t.Fatal(err)
	}
	checkSupermaskStep(t, net, in, []int{0, 1, 2, 3}, nil)
}

// checkSupermaskStep runs one step of a supermask trainer from the initial
// ranking on imgs and checks the score moves of the given edges (all if
// nil) against the finite differences.
func checkSupermaskStep(t *testing.T, net *Supermask, in *Inputs, imgs []int, edges [][]int) {
	t.Helper()
	orders := initOrders(net)
	eff, _, err := net.EffectiveFromRanking(orders, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s0, err := net.ScoresFromRanking(orders, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := net.NewTrainer(len(imgs))
	if err := tr.Load(orders); err != nil {
		t.Fatal(err)
	}
	batch := make([]int32, len(imgs))
	for i, k := range imgs {
		batch[i] = int32(k)
	}
	if _, err := tr.Train(in, batch, oneStep(len(imgs)), rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
	s1 := tr.Scores()
	eff64 := to64(eff)
	for l := range net.Layers {
		list := edges
		var es []int
		if list == nil {
			for e := range s1[l] {
				es = append(es, e)
			}
		} else {
			es = list[l]
		}
		for _, e := range es {
			w := float64(net.Layers[l].W[e])
			sign := 1.0
			if s0[l][e] < 0 {
				sign = -1
			}
			want := convFDGrad(*net.Conv, eff64, in, imgs, l, e) * w * sign
			checkConvGrad(t, "supermask step", l, e, s0[l][e]-s1[l][e], want)
		}
	}
}

// TestLeNetGradientsMatchFiniteDifferences checks the whole LeNet, in both
// forms, on a few edges of each layer (a float64 LeNet forward pass is
// slow): the largest gradients and a few at random.
func TestLeNetGradientsMatchFiniteDifferences(t *testing.T) {
	arch := LeNet()
	in := randomInputs(1, arch.InputDim(), arch.Classes(), 8, false)
	imgs := []int{0}
	net, err := NewConvSupermask(arch, 9)
	if err != nil {
		t.Fatal(err)
	}
	eff, _, err := net.EffectiveFromRanking(initOrders(net), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, g := engineGrads(arch, eff, in, []int32{0})
	rng := rand.New(rand.NewPCG(10, 1))
	edges := make([][]int, len(g))
	for l, gl := range g {
		order := make([]int, len(gl))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			return -cmp.Compare(math.Abs(float64(gl[a])), math.Abs(float64(gl[b])))
		})
		edges[l] = append(edges[l], order[0], order[1], rng.IntN(len(gl)))
	}
	if testing.Short() {
		for l := range edges {
			edges[l] = edges[l][:2]
		}
	}
	t.Run("supermask", func(t *testing.T) { checkSupermaskStep(t, net, in, imgs, edges) })
	t.Run("dense", func(t *testing.T) {
		d, err := NewConvDense(arch, 11)
		if err != nil {
			t.Fatal(err)
		}
		tr := d.NewTrainer(1)
		if err := tr.Load(d.Init); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Train(in, []int32{0}, oneStep(1), rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatal(err)
		}
		w64 := to64(d.Init)
		_, gd := engineGrads(arch, d.Init, in, []int32{0})
		for l, wl := range tr.Weights() {
			// The dense model's own largest gradients, and one at random.
			order := make([]int, len(gd[l]))
			for i := range order {
				order[i] = i
			}
			slices.SortFunc(order, func(a, b int) int {
				return -cmp.Compare(math.Abs(float64(gd[l][a])), math.Abs(float64(gd[l][b])))
			})
			es := []int{order[0], order[1], rng.IntN(len(wl))}
			if testing.Short() {
				es = es[:2]
			}
			for _, e := range es {
				checkConvGrad(t, "dense step", l, e, d.Init[l][e]-wl[e], convFDGrad(arch, w64, in, imgs, l, e))
			}
		}
	})
}

package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Dense is the same fully connected network with trainable weights (the
// FedAvg baseline, and the base model of low-rank fine-tuning). Weights are
// initialised like PyTorch's nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
type Dense struct {
	Sizes []int     // a fully connected net's layer sizes; nil for a Conv net
	Conv  *ConvArch // the convolutional network (NewConvDense); nil for a fully connected one
	Seed  uint64
	Init  [][]float32 // per layer, input-major
}

// NewDense draws the initial weights from a seed.
func NewDense(sizes []int, seed uint64) (*Dense, error) {
	if err := ValidateSizes(sizes); err != nil {
		return nil, err
	}
	return &Dense{Sizes: slices.Clone(sizes), Seed: seed, Init: denseInit(chainShapes(sizes), seed)}, nil
}

// NewConvDense draws the initial weights of a convolutional network: every
// weight layer (a convolution's kernel tensor or a fully connected layer)
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for both.
func NewConvDense(arch ConvArch, seed uint64) (*Dense, error) {
	shapes, err := arch.Shapes()
	if err != nil {
		return nil, err
	}
	a := arch.clone()
	return &Dense{Conv: &a, Seed: seed, Init: denseInit(shapes, seed)}, nil
}

// denseInit draws layers of the given (In, Out) shapes, layer l from its
// own stream of seed.
func denseInit(shapes [][2]int, seed uint64) [][]float32 {
	var init [][]float32
	for l, sh := range shapes {
		in, out := sh[0], sh[1]
		rng := rand.New(rand.NewPCG(seed, 0xde5e0000+uint64(l)))
		bound := 1 / math.Sqrt(float64(in))
		w := make([]float32, in*out)
		for e := range w {
			w[e] = float32((2*rng.Float64() - 1) * bound)
		}
		init = append(init, w)
	}
	return init
}

// Shapes returns each layer's (In, Out).
func (d *Dense) Shapes() [][2]int {
	if d.Conv != nil {
		sh, _ := d.Conv.Shapes() // checked by NewConvDense
		return sh
	}
	return chainShapes(d.Sizes)
}

// InputDim is the number of input features the network takes.
func (d *Dense) InputDim() int {
	if d.Conv != nil {
		return d.Conv.InputDim()
	}
	return d.Sizes[0]
}

func chainShapes(sizes []int) [][2]int {
	shapes := make([][2]int, len(sizes)-1)
	for l := range shapes {
		shapes[l] = [2]int{sizes[l], sizes[l+1]}
	}
	return shapes
}

// LayerSizes returns the number of weights of each layer.
func LayerSizes(sizes []int) []int {
	out := make([]int, len(sizes)-1)
	for l := range out {
		out[l] = sizes[l] * sizes[l+1]
	}
	return out
}

// Params is the number of weights.
func (d *Dense) Params() int {
	n := 0
	for _, w := range d.Init {
		n += len(w)
	}
	return n
}

// DenseTrainer trains a dense network's weights on one goroutine.
type DenseTrainer struct {
	shapes [][2]int // per layer (In, Out)
	inDim  int
	e      netEngine
	w      [][]float32
	mom    [][]float32
	colsum []float32
	order  []int32
	mu, wd float32
}

// NewDenseTrainer returns a trainer for batches of at most maxBatch images.
func NewDenseTrainer(sizes []int, maxBatch int) *DenseTrainer {
	return newDenseTrainer(chainShapes(sizes), sizes[0], newEngine(slices.Clone(sizes), maxBatch))
}

// NewTrainer returns a trainer of the network's weights for batches of at
// most maxBatch images (a fully connected or a convolutional network).
func (d *Dense) NewTrainer(maxBatch int) *DenseTrainer {
	if d.Conv != nil {
		return newDenseTrainer(d.Shapes(), d.InputDim(), newConvEngine(*d.Conv, maxBatch))
	}
	return NewDenseTrainer(d.Sizes, maxBatch)
}

func newDenseTrainer(shapes [][2]int, inDim int, e netEngine) *DenseTrainer {
	t := &DenseTrainer{shapes: shapes, inDim: inDim, e: e}
	for _, sh := range shapes {
		t.w = append(t.w, make([]float32, sh[0]*sh[1]))
		t.mom = append(t.mom, make([]float32, sh[0]*sh[1]))
	}
	return t
}

// Load copies the starting weights and resets momentum.
func (t *DenseTrainer) Load(w [][]float32) error {
	if len(w) != len(t.w) {
		return fmt.Errorf("model: %d weight layers for %d layers", len(w), len(t.w))
	}
	for l := range w {
		if len(w[l]) != len(t.w[l]) {
			return fmt.Errorf("model: layer %d has %d weights, want %d", l, len(w[l]), len(t.w[l]))
		}
		copy(t.w[l], w[l])
		fill(t.mom[l], 0)
	}
	t.colsum = columnSums(t.w[0], t.shapes[0][0], t.shapes[0][1], t.colsum)
	return nil
}

// Weights returns the current weights (aliased; valid until the next Load).
func (t *DenseTrainer) Weights() [][]float32 { return t.w }

// Train runs local SGD on the given samples and returns the mean loss of the last epoch.
func (t *DenseTrainer) Train(in *Inputs, samples []int32, h Hyper, rng *rand.Rand) (float64, error) {
	if in.Dim != t.inDim {
		return 0, fmt.Errorf("model: inputs have %d features, network expects %d", in.Dim, t.inDim)
	}
	t.mu, t.wd = float32(h.Momentum), float32(h.WeightDecay)
	var loss float64
	var err error
	t.order, loss, err = runEpochs(t.e, t, in, samples, h, rng, t.order)
	return loss, err
}

func (t *DenseTrainer) forward(e netEngine, in *Inputs, batch []int32) [][]float32 {
	e.forward(t.w, t.colsum, in, batch)
	return t.w
}

func (t *DenseTrainer) update(e netEngine, B int, offset, lr float32) {
	for l := range t.w {
		I, O := t.shapes[l][0], t.shapes[l][1]
		w, m := t.w[l], t.mom[l]
		for i := 0; i < I; i++ {
			g := e.rowGrad(l, i, B, offset)
			r := i * O
			denseUpdateRow(w[r:r+O], m[r:r+O], g, lr, t.mu, t.wd)
		}
	}
	t.colsum = columnSums(t.w[0], t.shapes[0][0], t.shapes[0][1], t.colsum)
}

func denseUpdateRow(w, m, g []float32, lr, mu, wd float32) {
	n := len(w)
	m, g = m[:n], g[:n]
	for j := 0; j < n; j++ {
		wj := w[j]
		mj := mu*m[j] + (g[j] + wd*wj)
		m[j] = mj
		w[j] = wj - lr*mj
	}
}

// Evaluator scores a network on a data set, one goroutine per Evaluator.
type Evaluator struct {
	e   netEngine
	idx []int32
}

const evalBatch = 32

// NewEvaluator returns an evaluator for networks of the given sizes.
func NewEvaluator(sizes []int) *Evaluator {
	return &Evaluator{e: newEngine(slices.Clone(sizes), evalBatch), idx: make([]int32, evalBatch)}
}

// NewConvEvaluator returns an evaluator for a convolutional network.
func NewConvEvaluator(arch ConvArch) *Evaluator {
	return &Evaluator{e: newConvEngine(arch.clone(), evalBatch), idx: make([]int32, evalBatch)}
}

// Run scores images [lo, hi) of in with effective weights eff (colsum =
// column sums of eff[0]) and returns the number classified correctly and
// the summed cross-entropy.
func (ev *Evaluator) Run(eff [][]float32, colsum []float32, in *Inputs, lo, hi int) (correct int, lossSum float64) {
	for k := lo; k < hi; k += evalBatch {
		n := min(evalBatch, hi-k)
		b := ev.idx[:n]
		for j := range b {
			b[j] = int32(k + j)
		}
		ev.e.forward(eff, colsum, in, b)
		l, c := ev.e.loss(in, b, false)
		lossSum += l
		correct += c
	}
	return correct, lossSum
}

// ColumnSums returns Σ_i w[i,:] of an input-major in×out layer.
func ColumnSums(w []float32, in, out int) []float32 { return columnSums(w, in, out, nil) }

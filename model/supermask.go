package model

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedrank/fedrank/internal/selectk"
)

const signBit = 0x80000000

// Supermask is a network of frozen random weights whose trainable part is a
// score per edge; in the forward pass each layer keeps only its Keep edges of
// largest |score| (Ramanujan et al.'s edge-popup, as used by FRL).
//
// Initialisation follows the FRL reference: weights are "signed constant",
// w = ±gain/sqrt(fan_in) with gain = sqrt(2) on every layer; scores are
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's kaiming_uniform_(a=sqrt(5))).
type Supermask struct {
	Sizes []int // a fully connected net's layer sizes; nil for a Conv net
	// Conv, when set, is the convolutional network whose weight layers
	// Layers are (NewConvSupermask); nil for a fully connected one.
	Conv   *ConvArch
	Seed   uint64
	Layers []SupermaskLayer
}

// SupermaskLayer is one layer's frozen part.
type SupermaskLayer struct {
	In, Out int
	W       []float32 // frozen weights, ±C, input-major
	C       float32   // |w|
	// Sorted holds the layer's initial score values in ascending order. A
	// global model is always a permutation of them: the vote decides only
	// which edge gets which value.
	Sorted []float32
	// InitOrder is the ranking (edge indices by ascending score) of the
	// initial scores: the global model of round 1.
	InitOrder []uint32
	// Keep is the number of edges a mask keeps: N - floor(0.5*N) (or the
	// fraction of NewSupermaskKeep).
	Keep int
	// On[i] tells whether the edge holding Sorted[i] is kept in a global model.
	// Because the mask takes the largest |score|, these are both ends of the
	// ascending order, not its top half.
	On []bool
	// thr is the smallest kept |score| bit pattern of a global model.
	thr uint32
}

// N is the layer's number of edges.
func (l *SupermaskLayer) N() int { return l.In * l.Out }

// NewSupermask builds the frozen network and initial scores from a seed.
func NewSupermask(sizes []int, seed uint64) (*Supermask, error) {
	return NewSupermaskKeep(sizes, seed, 0.5)
}

// NewSupermaskKeep is NewSupermask with masks that keep the fraction
// frac (in (0, 1]) of each layer's edges: Keep = N - floor((1-frac)·N), at least
// 1. NewSupermask is frac 0.5.
func NewSupermaskKeep(sizes []int, seed uint64, frac float64) (*Supermask, error) {
	if err := ValidateSizes(sizes); err != nil {
		return nil, err
	}
	if !(frac > 0 && frac <= 1) {
		return nil, fmt.Errorf("model: supermask keep fraction %v, want (0, 1]", frac)
	}
	net := &Supermask{Sizes: slices.Clone(sizes), Seed: seed, Layers: supermaskLayers(chainShapes(sizes), seed, frac)}
	return net, nil
}

// NewConvSupermask builds a convolutional supermask network: every weight
// layer (a convolution's kernel tensor, a fully connected layer) is one layer
// of edges, initialised, masked, ranked and voted like a fully connected
// layer, with fan-in In (in_channels·k·k for a convolution).
func NewConvSupermask(arch ConvArch, seed uint64) (*Supermask, error) {
	shapes, err := arch.Shapes()
	if err != nil {
		return nil, err
	}
	a := arch.clone()
	return &Supermask{Conv: &a, Seed: seed, Layers: supermaskLayers(shapes, seed, 0.5)}, nil
}

// supermaskLayers draws the frozen weights and initial scores of layers of
// the given (In, Out) shapes; layer l draws from its own stream of seed.
func supermaskLayers(shapes [][2]int, seed uint64, frac float64) []SupermaskLayer {
	var layers []SupermaskLayer
	for l, sh := range shapes {
		in, out := sh[0], sh[1]
		n := in * out
		rng := rand.New(rand.NewPCG(seed, 0x5eed0000+uint64(l)))
		c := float32(math.Sqrt2 / math.Sqrt(float64(in)))
		bound := 1 / math.Sqrt(float64(in))
		w := make([]float32, n)
		init := make([]float32, n)
		for e := range w {
			if rng.Uint64()&1 == 0 {
				w[e] = c
			} else {
				w[e] = -c
			}
			init[e] = float32((2*rng.Float64() - 1) * bound)
		}
		order := make([]uint32, n)
		for e := range order {
			order[e] = uint32(e)
		}
		// By score, ties by edge index: the stable order, from the faster
		// unstable sort.
		slices.SortFunc(order, func(a, b uint32) int {
			switch {
			case init[a] < init[b]:
				return -1
			case init[a] > init[b]:
				return 1
			}
			return cmp.Compare(a, b)
		})
		sorted := make([]float32, n)
		for i, e := range order {
			sorted[i] = init[e]
		}
		keep := max(n-int(float64(n)*(1-frac)), 1)
		thr := kthLargestAbs(sorted, keep, new([]uint32))
		on := make([]bool, n)
		for i, v := range sorted {
			on[i] = math.Float32bits(v)&^signBit >= thr
		}
		layers = append(layers, SupermaskLayer{
			In: in, Out: out, W: w, C: c, Sorted: sorted, InitOrder: order, Keep: keep, On: on, thr: thr,
		})
	}
	return layers
}

// Shapes returns each layer's (In, Out).
func (net *Supermask) Shapes() [][2]int {
	out := make([][2]int, len(net.Layers))
	for l := range net.Layers {
		out[l] = [2]int{net.Layers[l].In, net.Layers[l].Out}
	}
	return out
}

// InputDim is the number of input features the network takes.
func (net *Supermask) InputDim() int {
	if net.Conv != nil {
		return net.Conv.InputDim()
	}
	return net.Sizes[0]
}

// Params is the number of edges (scores) in the network.
func (net *Supermask) Params() int {
	n := 0
	for i := range net.Layers {
		n += net.Layers[i].N()
	}
	return n
}

// kthLargestAbs returns the bit pattern of the k-th largest |v| of vals
// (for non-negative floats, ordered as the values), using *scr as scratch
// (grown when too small; trainers keep theirs across steps).
func kthLargestAbs(vals []float32, k int, scr *[]uint32) uint32 {
	if cap(*scr) < len(vals) {
		*scr = make([]uint32, len(vals))
	}
	bits := (*scr)[:len(vals)]
	for i, v := range vals {
		bits[i] = math.Float32bits(v) &^ signBit
	}
	return selectKthLargest(bits, k)
}

// selectKthLargest returns the k-th largest (1-based) of a, reordering a.
func selectKthLargest[T uint32 | uint64](a []T, k int) T {
	if k < 1 || k > len(a) {
		panic(fmt.Sprintf("model: select %d-th of %d", k, len(a)))
	}
	selectk.Nth(a, len(a)-k)
	return a[len(a)-k]
}

// EffectiveFromRanking builds a global model's effective weights (w·mask) and
// the first layer's column sums from per-layer rankings (edge indices by
// ascending score). Because a global model's scores are a permutation of the
// initial ones, its mask needs no selection: the edge at position i is kept
// exactly when On[i].
func (net *Supermask) EffectiveFromRanking(order [][]uint32, eff [][]float32, colsum []float32) ([][]float32, []float32, error) {
	if len(order) != len(net.Layers) {
		return nil, nil, fmt.Errorf("model: %d layer rankings for %d layers", len(order), len(net.Layers))
	}
	if eff == nil {
		eff = make([][]float32, len(net.Layers))
	}
	for l := range net.Layers {
		ly := &net.Layers[l]
		if len(order[l]) != ly.N() {
			return nil, nil, fmt.Errorf("model: layer %d ranking has %d entries, want %d", l, len(order[l]), ly.N())
		}
		if len(eff[l]) != ly.N() {
			eff[l] = make([]float32, ly.N())
		}
		el := eff[l]
		for i, e := range order[l] {
			if ly.On[i] {
				el[e] = ly.W[e]
			} else {
				el[e] = 0
			}
		}
	}
	colsum = columnSums(eff[0], net.Layers[0].In, net.Layers[0].Out, colsum)
	return eff, colsum, nil
}

func columnSums(w []float32, in, out int, colsum []float32) []float32 {
	if len(colsum) != out {
		colsum = make([]float32, out)
	}
	fill(colsum, 0)
	for i := 0; i < in; i++ {
		axpy(1, w[i*out:(i+1)*out], colsum)
	}
	return colsum
}

// ScoresFromRanking sets scores[order[i]] = Sorted[i] for every layer.
func (net *Supermask) ScoresFromRanking(order [][]uint32, scores [][]float32) ([][]float32, error) {
	if len(order) != len(net.Layers) {
		return nil, fmt.Errorf("model: %d layer rankings for %d layers", len(order), len(net.Layers))
	}
	if scores == nil {
		scores = make([][]float32, len(net.Layers))
	}
	for l := range net.Layers {
		ly := &net.Layers[l]
		if len(order[l]) != ly.N() {
			return nil, fmt.Errorf("model: layer %d ranking has %d entries, want %d", l, len(order[l]), ly.N())
		}
		if len(scores[l]) != ly.N() {
			scores[l] = make([]float32, ly.N())
		}
		for i, e := range order[l] {
			scores[l][e] = ly.Sorted[i]
		}
	}
	return scores, nil
}

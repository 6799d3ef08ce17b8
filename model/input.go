package model

import (
	"fmt"

	"github.com/fedrank/fedrank/data"
)

// Inputs holds a data set ready for the first layer: every image normalised as
// x = (pixel/255 - mean)/std, stored sparsely as x = v + Offset, where v is zero
// on background pixels. The first layer then costs only the non-zero pixels
// (about a fifth of MNIST's) plus one constant per output:
//
//	x·W = Σ_{i: v_i≠0} v_i W_i + Offset·Σ_i W_i
//
// and the same split applies to the weight gradient.
type Inputs struct {
	N       int
	Dim     int
	Classes int
	Offset  float32   // -mean/std: added to every coordinate
	Ptr     []int32   // image k's entries are Idx[Ptr[k]:Ptr[k+1]], Val[...]
	Idx     []uint16  // pixel index
	Val     []float32 // pixel/(255*std)
	Labels  []uint8
}

// NewInputs converts a data set with normalisation mean and std (for MNIST,
// data.MNISTMean and data.MNISTStd).
func NewInputs(s *data.Set, mean, std float64) (*Inputs, error) {
	dim := s.Dim()
	if dim <= 0 || dim > 1<<16 {
		return nil, fmt.Errorf("model: input dimension %d out of range 1..65536", dim)
	}
	if std <= 0 {
		return nil, fmt.Errorf("model: normalisation std %v must be > 0", std)
	}
	if len(s.Pixels) != s.N*dim || len(s.Labels) != s.N {
		return nil, fmt.Errorf("model: data set of %d images has %d pixels and %d labels", s.N, len(s.Pixels), len(s.Labels))
	}
	nz := 0
	for _, p := range s.Pixels {
		if p != 0 {
			nz++
		}
	}
	in := &Inputs{
		N: s.N, Dim: dim, Classes: s.Classes,
		Offset: float32(-mean / std),
		Ptr:    make([]int32, s.N+1),
		Idx:    make([]uint16, 0, nz),
		Val:    make([]float32, 0, nz),
		Labels: s.Labels,
	}
	scale := 1 / (255 * std)
	for k := 0; k < s.N; k++ {
		img := s.Pixels[k*dim : (k+1)*dim]
		for i, p := range img {
			if p != 0 {
				in.Idx = append(in.Idx, uint16(i))
				in.Val = append(in.Val, float32(float64(p)*scale))
			}
		}
		in.Ptr[k+1] = int32(len(in.Idx))
	}
	for k, l := range s.Labels {
		if int(l) >= s.Classes {
			return nil, fmt.Errorf("model: image %d has label %d, want < %d", k, l, s.Classes)
		}
	}
	return in, nil
}

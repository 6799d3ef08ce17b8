//go:build !(goexperiment.simd && amd64)

package model

// The portable build: no vector kernels (kernels_simd.go has them).

const vectorKernels = false

// axpyVector does nothing and reports false: axpy uses its portable path.
func axpyVector(a float32, x, y []float32) bool { return false }

// smUpdateRowVector does nothing and returns 0: smUpdateRow updates every
// edge.
func smUpdateRowVector(s, m, w, eff, g []float32, first uint32, lr, mu, wd float32, bd *band) int {
	return 0
}

// SetVectorKernels reports false: this build has no vector kernels (see
// kernels_simd.go).
func SetVectorKernels(on bool) bool { return false }

// sparseRowsVector does nothing and reports false: the caller runs axpy
// per pixel.
func sparseRowsVector(z, w []float32, O int, idx []uint16, val []float32) bool { return false }

// scaleIntoVector does nothing and reports false: scaleInto runs.
func scaleIntoVector(a float32, x, y []float32) bool { return false }

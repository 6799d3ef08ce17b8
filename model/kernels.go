package model

import "gonum.org/v1/gonum/blas/gonum"

// impl is gonum's pure-Go BLAS; on amd64 its level-1 float32 kernels are
// SSE assembly that ships with the module (with a generic fallback
// elsewhere), four to eight times faster than a scalar loop on rows of a
// few hundred elements.
var impl gonum.Implementation

// asmMin is the row length from which the call overhead of the assembly
// kernels pays off.
const asmMin = 32

// Small dense kernels on float32 slices. Written so the compiler drops the
// bounds checks (slices re-sliced to a common length before the loop) and
// unrolled by four, which keeps two cores busy on the memory-bound shapes of
// a batch-8 step. Portable Go: no assembly, no build tags.

// axpy computes y += a*x over len(y) elements (x must be at least as long).
func axpy(a float32, x, y []float32) {
	n := len(y)
	if n >= asmMin {
		if axpyVector(a, x, y) {
			return
		}
		impl.Saxpy(n, a, x, 1, y, 1)
		return
	}
	x = x[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		xs := x[i : i+4 : i+4]
		ys := y[i : i+4 : i+4]
		ys[0] += a * xs[0]
		ys[1] += a * xs[1]
		ys[2] += a * xs[2]
		ys[3] += a * xs[3]
	}
	for ; i < n; i++ {
		y[i] += a * x[i]
	}
}

// dot returns the inner product of x and y over len(x) elements.
func dot(x, y []float32) float32 {
	n := len(x)
	if n >= asmMin {
		return impl.Sdot(n, x, 1, y, 1)
	}
	y = y[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		xs := x[i : i+4 : i+4]
		ys := y[i : i+4 : i+4]
		s0 += xs[0] * ys[0]
		s1 += xs[1] * ys[1]
		s2 += xs[2] * ys[2]
		s3 += xs[3] * ys[3]
	}
	for ; i < n; i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// fill sets every element of y to v.
func fill(y []float32, v float32) {
	for i := range y {
		y[i] = v
	}
}

// scaleInto sets y = a*x.
func scaleInto(a float32, x, y []float32) {
	if scaleIntoVector(a, x, y) {
		return
	}
	x = x[:len(y)]
	for i := range y {
		y[i] = a * x[i]
	}
}

//go:build goexperiment.simd && amd64

package model

import (
	"math/bits"
	"simd/archsimd"
)

// The vector build (GOEXPERIMENT=simd, amd64): axpy's rows of asmMin
// elements or more and the supermask score update (smUpdateRow) use
// AVX-512 when the CPU has it, the portable code otherwise. Like gonum's
// kernel and the scalar Go code (GOAMD64=v1 fuses nothing), they multiply,
// round, then add and round (no fused multiply-add), element by element,
// so their results are the portable build's bit for bit: the same models
// and hashes (TestVectorAxpyMatchesPortable,
// TestVectorScoreUpdateMatchesPortable, and the simulator's golden traces
// run with GOEXPERIMENT=simd).

// vectorKernels is whether axpy uses the AVX-512 kernel; tests and
// benchmarks switch it off to time the portable path in the same run.
var vectorKernels = archsimd.X86.AVX512()

// axpyVector computes y += a*x over len(y) elements (len(x) >= len(y)) and
// reports true, or does nothing and reports false when the vector kernel is
// off.
func axpyVector(a float32, x, y []float32) bool {
	if !vectorKernels {
		return false
	}
	if a == 0 {
		return true // as gonum's Saxpy: y unchanged, even where x is not finite
	}
	axpy512(a, x, y)
	return true
}

func axpy512(a float32, x, y []float32) {
	n := len(y)
	x = x[:n]
	va := archsimd.BroadcastFloat32x16(a)
	i := 0
	for ; i+32 <= n; i += 32 {
		x0 := archsimd.LoadFloat32x16Slice(x[i : i+16])
		x1 := archsimd.LoadFloat32x16Slice(x[i+16 : i+32])
		y0 := archsimd.LoadFloat32x16Slice(y[i : i+16])
		y1 := archsimd.LoadFloat32x16Slice(y[i+16 : i+32])
		y0.Add(x0.Mul(va)).StoreSlice(y[i : i+16])
		y1.Add(x1.Mul(va)).StoreSlice(y[i+16 : i+32])
	}
	for ; i+16 <= n; i += 16 {
		x0 := archsimd.LoadFloat32x16Slice(x[i : i+16])
		y0 := archsimd.LoadFloat32x16Slice(y[i : i+16])
		y0.Add(x0.Mul(va)).StoreSlice(y[i : i+16])
	}
	if i < n {
		x0 := archsimd.LoadFloat32x16SlicePart(x[i:])
		y0 := archsimd.LoadFloat32x16SlicePart(y[i:])
		y0.Add(x0.Mul(va)).StoreSlicePart(y[i:])
	}
	archsimd.ClearAVXUpperBits()
}

// smUpdateRowVector is smUpdateRow with AVX-512 on the row's leading
// whole blocks of 16 edges (the same operations in the same order per
// edge, unfused: the same bits), and returns how many edges it updated;
// smUpdateRow does the rest. 0 when the vector kernels are off.
func smUpdateRowVector(s, m, w, eff, g []float32, first uint32, lr, mu, wd float32, bd *band) int {
	if !vectorKernels {
		return 0
	}
	n := len(s)
	m, w, eff, g = m[:n], w[:n], eff[:n], g[:n]
	lo, hi := bd.lo, bd.hi
	span := hi - lo
	above := bd.above
	sign := archsimd.BroadcastUint32x16(signBit)
	abs := archsimd.BroadcastUint32x16(^uint32(signBit))
	vmu, vlr, vwd := archsimd.BroadcastFloat32x16(mu), archsimd.BroadcastFloat32x16(lr), archsimd.BroadcastFloat32x16(wd)
	vhi, vlo, vspan := archsimd.BroadcastUint32x16(hi), archsimd.BroadcastUint32x16(lo), archsimd.BroadcastUint32x16(span)
	var zero archsimd.Int32x16
	var abLanes [16]uint32
	j := 0
	for ; j+16 <= n; j += 16 {
		sj := archsimd.LoadFloat32x16Slice(s[j : j+16])
		wv := archsimd.LoadFloat32x16Slice(w[j : j+16])
		mv := archsimd.LoadFloat32x16Slice(m[j : j+16])
		gv := archsimd.LoadFloat32x16Slice(g[j : j+16])
		wb := wv.AsUint32x16()
		ws := wb.Xor(sj.AsUint32x16().And(sign)).AsFloat32x16()
		// mu*m + (g*ws + wd*s), each product and sum rounded.
		mj := vmu.Mul(mv).Add(gv.Mul(ws).Add(vwd.Mul(sj)))
		mj.StoreSlice(m[j : j+16])
		sj = sj.Sub(vlr.Mul(mj))
		sj.StoreSlice(s[j : j+16])
		ab := sj.AsUint32x16().And(abs)
		// kept: int32(hi-ab) < 0, as the scalar code's arithmetic shift.
		kept := vhi.Sub(ab).AsInt32x16().Less(zero)
		wb.And(kept.ToInt32x16().AsUint32x16()).AsFloat32x16().StoreSlice(eff[j : j+16])
		above += bits.OnesCount16(kept.ToBits())
		if in := ab.Sub(vlo).LessEqual(vspan).ToBits(); in != 0 {
			ab.Store(&abLanes)
			for ; in != 0; in &= in - 1 {
				k := bits.TrailingZeros16(in)
				bd.cand = append(bd.cand, uint64(abLanes[k])<<32|uint64(first+uint32(j+k)))
			}
		}
	}
	archsimd.ClearAVXUpperBits()
	bd.above = above
	return j
}

// SetVectorKernels switches the vector kernels on (if the CPU has AVX-512)
// or off, and reports whether they are on. Results do not change; only
// benchmarks that time both paths in one run need it. It must not be called
// while a training or an evaluation runs.
func SetVectorKernels(on bool) bool {
	vectorKernels = on && archsimd.X86.AVX512()
	return vectorKernels
}

// sparseRowsVector adds val[p] × row idx[p] of w (rows of O) to z, pixel by
// pixel in order, as axpy per pixel would (a zero val[p] skipped, as axpy
// skips it), and reports true; false, doing nothing, when the vector
// kernels are off or O is below asmMin (where axpy is scalar). z stays in
// registers across the pixels, 128 columns at a time (then 64, then 32,
// then the rest): each z[o] sees the
// same multiplications and additions in the same order as with axpy.
func sparseRowsVector(z, w []float32, O int, idx []uint16, val []float32) bool {
	if !vectorKernels || O < asmMin {
		return false
	}
	z = z[:O]
	val = val[:len(idx)]
	o := 0
	for ; o+128 <= O; o += 128 {
		zt := z[o : o+128]
		a0 := archsimd.LoadFloat32x16Slice(zt[0:16])
		a1 := archsimd.LoadFloat32x16Slice(zt[16:32])
		a2 := archsimd.LoadFloat32x16Slice(zt[32:48])
		a3 := archsimd.LoadFloat32x16Slice(zt[48:64])
		a4 := archsimd.LoadFloat32x16Slice(zt[64:80])
		a5 := archsimd.LoadFloat32x16Slice(zt[80:96])
		a6 := archsimd.LoadFloat32x16Slice(zt[96:112])
		a7 := archsimd.LoadFloat32x16Slice(zt[112:128])
		for p, i := range idx {
			v := val[p]
			if v == 0 {
				continue
			}
			va := archsimd.BroadcastFloat32x16(v)
			r := int(i)*O + o
			row := w[r : r+128]
			a0 = a0.Add(archsimd.LoadFloat32x16Slice(row[0:16]).Mul(va))
			a1 = a1.Add(archsimd.LoadFloat32x16Slice(row[16:32]).Mul(va))
			a2 = a2.Add(archsimd.LoadFloat32x16Slice(row[32:48]).Mul(va))
			a3 = a3.Add(archsimd.LoadFloat32x16Slice(row[48:64]).Mul(va))
			a4 = a4.Add(archsimd.LoadFloat32x16Slice(row[64:80]).Mul(va))
			a5 = a5.Add(archsimd.LoadFloat32x16Slice(row[80:96]).Mul(va))
			a6 = a6.Add(archsimd.LoadFloat32x16Slice(row[96:112]).Mul(va))
			a7 = a7.Add(archsimd.LoadFloat32x16Slice(row[112:128]).Mul(va))
		}
		a0.StoreSlice(zt[0:16])
		a1.StoreSlice(zt[16:32])
		a2.StoreSlice(zt[32:48])
		a3.StoreSlice(zt[48:64])
		a4.StoreSlice(zt[64:80])
		a5.StoreSlice(zt[80:96])
		a6.StoreSlice(zt[96:112])
		a7.StoreSlice(zt[112:128])
	}
	if o+64 <= O {
		// 64 columns (a convolution's output channels) in one pass.
		zt := z[o : o+64]
		a0 := archsimd.LoadFloat32x16Slice(zt[0:16])
		a1 := archsimd.LoadFloat32x16Slice(zt[16:32])
		a2 := archsimd.LoadFloat32x16Slice(zt[32:48])
		a3 := archsimd.LoadFloat32x16Slice(zt[48:64])
		for p, i := range idx {
			v := val[p]
			if v == 0 {
				continue
			}
			va := archsimd.BroadcastFloat32x16(v)
			r := int(i)*O + o
			row := w[r : r+64]
			a0 = a0.Add(archsimd.LoadFloat32x16Slice(row[0:16]).Mul(va))
			a1 = a1.Add(archsimd.LoadFloat32x16Slice(row[16:32]).Mul(va))
			a2 = a2.Add(archsimd.LoadFloat32x16Slice(row[32:48]).Mul(va))
			a3 = a3.Add(archsimd.LoadFloat32x16Slice(row[48:64]).Mul(va))
		}
		a0.StoreSlice(zt[0:16])
		a1.StoreSlice(zt[16:32])
		a2.StoreSlice(zt[32:48])
		a3.StoreSlice(zt[48:64])
		o += 64
	}
	for ; o+32 <= O; o += 32 {
		a0 := archsimd.LoadFloat32x16Slice(z[o : o+16])
		a1 := archsimd.LoadFloat32x16Slice(z[o+16 : o+32])
		for p, i := range idx {
			v := val[p]
			if v == 0 {
				continue
			}
			va := archsimd.BroadcastFloat32x16(v)
			r := int(i)*O + o
			a0 = a0.Add(archsimd.LoadFloat32x16Slice(w[r : r+16]).Mul(va))
			a1 = a1.Add(archsimd.LoadFloat32x16Slice(w[r+16 : r+32]).Mul(va))
		}
		a0.StoreSlice(z[o : o+16])
		a1.StoreSlice(z[o+16 : o+32])
	}
	if o < O {
		// The last columns, fewer than 32: one or two vectors, the
		// second partial.
		m := O - o
		a0 := archsimd.LoadFloat32x16SlicePart(z[o:O])
		var a1 archsimd.Float32x16
		if m > 16 {
			a1 = archsimd.LoadFloat32x16SlicePart(z[o+16 : O])
		}
		for p, i := range idx {
			v := val[p]
			if v == 0 {
				continue
			}
			va := archsimd.BroadcastFloat32x16(v)
			r := int(i)*O + o
			a0 = a0.Add(archsimd.LoadFloat32x16SlicePart(w[r : r+min(m, 16)]).Mul(va))
			if m > 16 {
				a1 = a1.Add(archsimd.LoadFloat32x16SlicePart(w[r+16 : r+m]).Mul(va))
			}
		}
		a0.StoreSlicePart(z[o:O])
		if m > 16 {
			a1.StoreSlicePart(z[o+16 : O])
		}
	}
	archsimd.ClearAVXUpperBits()
	return true
}

// scaleIntoVector sets y = a*x (one rounded product per element, as
// scaleInto) and reports true; false, doing nothing, when the vector
// kernels are off or y is short.
func scaleIntoVector(a float32, x, y []float32) bool {
	n := len(y)
	if !vectorKernels || n < 16 {
		return false
	}
	x = x[:n]
	va := archsimd.BroadcastFloat32x16(a)
	i := 0
	for ; i+16 <= n; i += 16 {
		archsimd.LoadFloat32x16Slice(x[i : i+16]).Mul(va).StoreSlice(y[i : i+16])
	}
	if i < n {
		archsimd.LoadFloat32x16SlicePart(x[i:]).Mul(va).StoreSlicePart(y[i:])
	}
	archsimd.ClearAVXUpperBits()
	return true
}

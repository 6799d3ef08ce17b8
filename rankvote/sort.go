package rankvote

import (
	"fmt"
	"math"
)

// The sorts are least-significant-digit radix sorts over radixBits-bit digits.
// Elements travel as one uint64, key<<32 | index, so each pass scatters a single
// stream of 8-byte words into radixSize buckets. The scatter is stable, so equal
// keys keep ascending index order. One counting pass fills the histograms of all
// digits at once; a digit that is the same for every key moves nothing and its
// pass is skipped.
//
// 3 passes of 11 bits beat 4 passes of 8 bits on this project's machines by
// 1.1-1.3x at 5M elements and are about even at 266,200 (BenchmarkArgsortDigits):
// the extra pass costs more than the 2048 buckets' poorer cache locality.
const (
	radixBits = 11
	radixSize = 1 << radixBits
	radixMask = radixSize - 1
	passes32  = (32 + radixBits - 1) / radixBits
	passes64  = (64 + radixBits - 1) / radixBits
	maxPasses = passes64
)

// The counting loops of the 32-bit sorts are written out for 3 digits.
var _ = [1]struct{}{}[passes32-3]

// Sorter holds the scratch memory of the argsorts. The zero value is ready to use;
// after the first call of a given size, calls of that size or smaller allocate
// nothing. A Sorter is not safe for concurrent use.
type Sorter struct {
	hist [maxPasses][radixSize]uint32
	a, b []uint64 // packed key<<32|index, ping-pong
	k32  []uint32 // narrowed uint64 keys
	// wide path of ArgsortUint64 (keys spanning 2^32 or more)
	ka, kb []uint64
	ia     []uint32
}

// FloatKey maps a float32 to a uint32 whose unsigned order is the float order:
// -Inf < negative numbers < -0 == +0 < positive numbers < +Inf < NaN.
// -0 and +0 get the same key. Every NaN, whatever its sign and payload, gets the
// largest key, 0xFFFFFFFF, which no number has.
func FloatKey(f float32) uint32 {
	b := math.Float32bits(f)
	mag := b & 0x7fffffff
	if mag > 0x7f800000 { // NaN
		return math.MaxUint32
	}
	// 0x80000000 + mag for non-negative, 0x80000000 - mag for negative: -0 and
	// +0 meet at 0x80000000. s is all ones when the sign bit is set, and
	// (mag^s)-s is then -mag.
	s := uint32(int32(b) >> 31)
	return 0x80000000 + (mag ^ s) - s
}

// Argsort writes into order (len(scores), allocated if nil or short) the indices
// of scores in ascending order of value. Equal values keep ascending index order
// (the sort is stable), and -0 equals +0. NaNs go last, after +Inf, in index
// order among themselves. It returns order[:len(scores)].
func (s *Sorter) Argsort(scores []float32, order []uint32) []uint32 {
	n := len(scores)
	order = growUint32(order, n)
	if n < 2 {
		return identity(order)
	}
	checkSortSize(n)
	h := s.clearHist(passes32)
	for _, f := range scores {
		k := FloatKey(f)
		h[0][k&radixMask]++
		h[1][(k>>radixBits)&radixMask]++
		h[2][k>>(2*radixBits)]++
	}
	var plan [maxPasses]uint8
	active := planPasses(h[:passes32], n, plan[:])
	if len(active) == 0 {
		return identity(order)
	}
	off := &h[active[0]]
	sh := uint(active[0]) * radixBits
	if len(active) == 1 {
		for i, f := range scores {
			d := (FloatKey(f) >> sh) & radixMask
			p := off[d]
			off[d]++
			order[p] = uint32(i)
		}
		return order
	}
	dst := s.bufA(n)
	for i, f := range scores {
		k := FloatKey(f)
		d := (k >> sh) & radixMask
		p := off[d]
		off[d]++
		dst[p] = uint64(k)<<32 | uint64(i)
	}
	s.finish(active[1:], dst, order)
	return order
}

// ArgsortUint32 is Argsort for unsigned keys: order receives the indices of keys
// by ascending key, equal keys by ascending index. Passes whose digit is the same
// for every key are skipped, so small keys (Borda sums of a few voters) sort in
// fewer passes.
func (s *Sorter) ArgsortUint32(keys []uint32, order []uint32) []uint32 {
	n := len(keys)
	order = growUint32(order, n)
	if n < 2 {
		return identity(order)
	}
	checkSortSize(n)
	h := s.clearHist(passes32)
	for _, k := range keys {
		h[0][k&radixMask]++
		h[1][(k>>radixBits)&radixMask]++
		h[2][k>>(2*radixBits)]++
	}
	var plan [maxPasses]uint8
	active := planPasses(h[:passes32], n, plan[:])
	if len(active) == 0 {
		return identity(order)
	}
	off := &h[active[0]]
	sh := uint(active[0]) * radixBits
	if len(active) == 1 {
		for i, k := range keys {
			d := (k >> sh) & radixMask
			p := off[d]
			off[d]++
			order[p] = uint32(i)
		}
		return order
	}
	dst := s.bufA(n)
	for i, k := range keys {
		d := (k >> sh) & radixMask
		p := off[d]
		off[d]++
		dst[p] = uint64(k)<<32 | uint64(i)
	}
	s.finish(active[1:], dst, order)
	return order
}

// ArgsortUint64 is ArgsortUint32 for 64-bit keys. Keys are sorted relative to
// their minimum; when they span less than 2^32 (Borda sums always do in practice)
// they are narrowed to uint32 and sorted as such, otherwise a slower path sorts
// the full 64-bit differences.
func (s *Sorter) ArgsortUint64(keys []uint64, order []uint32) []uint32 {
	n := len(keys)
	order = growUint32(order, n)
	if n < 2 {
		return identity(order)
	}
	checkSortSize(n)
	lo, hi := keys[0], keys[0]
	for _, k := range keys {
		lo = min(lo, k)
		hi = max(hi, k)
	}
	if hi-lo <= math.MaxUint32 {
		s.k32 = growUint32(s.k32, n)
		k32 := s.k32
		for i, k := range keys {
			k32[i] = uint32(k - lo)
		}
		return s.ArgsortUint32(k32, order)
	}
	return s.argsortWide(keys, lo, order)
}

// argsortWide sorts 64-bit keys (minus lo) with separate key and index arrays.
func (s *Sorter) argsortWide(keys []uint64, lo uint64, order []uint32) []uint32 {
	n := len(keys)
	h := s.clearHist(passes64)
	for _, k := range keys {
		k -= lo
		for p := range passes64 {
			h[p][(k>>(uint(p)*radixBits))&radixMask]++
		}
	}
	var plan [maxPasses]uint8
	active := planPasses(h[:passes64], n, plan[:]) // at least one: the keys differ
	s.ka = growUint64(s.ka, n)
	s.kb = growUint64(s.kb, n)
	s.ia = growUint32(s.ia, n)
	srcK, dstK := s.ka, s.kb
	for i, k := range keys {
		srcK[i] = k - lo
	}
	srcI := identity(order)
	dstI := s.ia
	for _, p := range active {
		off := &h[p]
		sh := uint(p) * radixBits
		for i, k := range srcK {
			d := (k >> sh) & radixMask
			q := off[d]
			off[d]++
			dstK[q] = k
			dstI[q] = srcI[i]
		}
		srcK, dstK = dstK, srcK
		srcI, dstI = dstI, srcI
	}
	if len(active)%2 == 1 { // the result is in s.ia
		copy(order, srcI)
	}
	return order
}

// finish runs the remaining passes (at least one) over the packed elements in
// src; the last one writes the indices into order.
func (s *Sorter) finish(active []uint8, src []uint64, order []uint32) {
	h := &s.hist
	tmp := s.bufB(len(src))
	for _, p := range active[:len(active)-1] {
		off := &h[p]
		sh := 32 + uint(p)*radixBits
		for _, v := range src {
			d := (v >> sh) & radixMask
			q := off[d]
			off[d]++
			tmp[q] = v
		}
		src, tmp = tmp, src
	}
	p := active[len(active)-1]
	off := &h[p]
	sh := 32 + uint(p)*radixBits
	order = order[:len(src)]
	for _, v := range src {
		d := (v >> sh) & radixMask
		q := off[d]
		off[d]++
		order[q] = uint32(v)
	}
}

// planPasses turns the digit histograms into bucket offsets (exclusive prefix
// sums) and returns, in buf, the digits that need a pass: those not shared by
// all n keys.
func planPasses(h [][radixSize]uint32, n int, buf []uint8) []uint8 {
	active := buf[:0]
	for p := range h {
		c := &h[p]
		var sum uint32
		constant := false
		for d, x := range c {
			if int(x) == n {
				constant = true
			}
			c[d] = sum
			sum += x
		}
		if !constant {
			active = append(active, uint8(p))
		}
	}
	return active
}

func (s *Sorter) clearHist(passes int) *[maxPasses][radixSize]uint32 {
	for p := range passes {
		clear(s.hist[p][:])
	}
	return &s.hist
}

func (s *Sorter) bufA(n int) []uint64 {
	s.a = growUint64(s.a, n)
	return s.a
}

func (s *Sorter) bufB(n int) []uint64 {
	s.b = growUint64(s.b, n)
	return s.b
}

func checkSortSize(n int) {
	if n > MaxSize {
		panic(fmt.Sprintf("rankvote: cannot sort %d elements: indices are uint32", n))
	}
}

// identity fills order with 0, 1, 2, ...
func identity(order []uint32) []uint32 {
	for i := range order {
		order[i] = uint32(i)
	}
	return order
}

// grow returns s resliced to n, reallocated when its capacity is short.
// The contents are not preserved.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func growUint32(s []uint32, n int) []uint32 { return grow(s, n) }

func growUint64(s []uint64, n int) []uint64 { return grow(s, n) }

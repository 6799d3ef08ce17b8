package rankvote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// The packed encoding of a ranking of n edges: its n indices, each in BitsPer(n)
// bits, concatenated in little-endian bit order (index i occupies bits
// i*b .. i*b+b-1 of the byte string read as one little-endian number), the last
// byte padded with zero bits. No header: the receiver knows n from the model.
// For the 784x300 MNIST layer that is 18 bits per edge instead of the
// reference's 64.

var (
	// ErrPackedLength: the packed bytes are not exactly PackedSize(n) long.
	ErrPackedLength = errors.New("rankvote: packed ranking has the wrong length")
	// ErrPadding: the bits after the last index are not all zero.
	ErrPadding = errors.New("rankvote: packed ranking has non-zero padding")
	// ErrSize: a ranking size outside 0..MaxSize.
	ErrSize = errors.New("rankvote: ranking size out of range")
)

// BitsPer is the number of bits of one packed index of a ranking of n edges:
// ceil(log2 n), 0 for n <= 1. It panics if n is outside 0..MaxSize.
func BitsPer(n int) int {
	checkSize(n)
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

// PackedSize is the length in bytes of a packed ranking of n edges. It panics if
// n is outside 0..MaxSize.
func PackedSize(n int) int {
	return int((uint64(n)*uint64(BitsPer(n)) + 7) / 8)
}

func checkSize(n int) {
	if n < 0 || n > MaxSize {
		panic(fmt.Sprintf("rankvote: ranking size %d outside 0..%d", n, MaxSize))
	}
}

// Pack appends the packed encoding of r, a ranking of n edges, to dst and
// returns the extended slice. It checks only what the encoding needs: len(r) must
// be n and every value below n, or Pack panics (a caller packs its own, valid
// rankings; Validate checks that r is a permutation).
func Pack(dst []byte, r []uint32, n int) []byte {
	if len(r) != n {
		panic(fmt.Sprintf("rankvote: Pack: ranking of length %d, want %d", len(r), n))
	}
	out, hi := packBits(dst, r, uint(BitsPer(n)))
	if n > 0 && hi > uint32(n-1) {
		i := slices.IndexFunc(r, func(v uint32) bool { return v > uint32(n-1) })
		panic(fmt.Sprintf("rankvote: Pack: index %d holds value %d, want < %d", i, r[i], n))
	}
	return out
}

// packBits appends the values of r, b bits each, and returns the largest value
// (every value must be < 1<<b, b <= 32, or the output is garbage).
func packBits(dst []byte, r []uint32, b uint) (out []byte, hi uint32) {
	size := int((uint64(len(r))*uint64(b) + 7) / 8)
	start := len(dst)
	dst = growBytes(dst, size)
	out = dst[start : start+size]
	if b == 0 {
		for _, v := range r {
			hi = max(hi, v)
		}
		return dst[:start+size], hi
	}
	// acc holds nb pending bits; a full word goes out as one 8-byte store.
	var acc uint64
	var nb uint
	w := 0
	for _, v := range r {
		hi = max(hi, v)
		acc |= uint64(v) << nb
		nb += b
		if nb >= 64 {
			binary.LittleEndian.PutUint64(out[w:], acc)
			w += 8
			nb -= 64
			// the bits of v that did not fit; 0 when nb == 0 since v < 1<<b
			acc = uint64(v) >> (b - nb)
		}
	}
	for k := range out[w:] { // the last, partial word
		out[w+k] = byte(acc >> (8 * k))
	}
	return dst[:start+size], hi
}

// Unpack decodes a packed ranking of n edges into dst (resized to n, allocated if
// nil or short) and returns it. It fails if len(src) is not exactly
// PackedSize(n) (ErrPackedLength), if a value is not below n
// (*InvalidRankingError, ReasonRange), or if the padding bits of the last byte
// are not zero (ErrPadding), so every byte string has at most one decoding and
// re-packing it gives the same bytes. It does NOT check that the result is a
// permutation: the decoded ranking may repeat values; run Validate (or
// Vote.Add, which validates) on it. On error the contents of dst are unspecified.
func Unpack(src []byte, n int, dst []uint32) ([]uint32, error) {
	if n < 0 || n > MaxSize {
		return dst[:0], fmt.Errorf("%w: %d", ErrSize, n)
	}
	size := PackedSize(n)
	if len(src) != size {
		return dst[:0], fmt.Errorf("%w: %d bytes for %d edges, want %d", ErrPackedLength, len(src), n, size)
	}
	dst = growUint32(dst, n)
	b := uint(BitsPer(n))
	hi := unpackBits(src, b, dst)
	// Values reach up to 1<<b - 1, so some may be >= n unless n is a power of two.
	if lim := uint32(n - 1); hi > lim {
		for i, v := range dst {
			if v > lim {
				return dst, rangeError(i, v, n)
			}
		}
	}
	if used := (uint64(n) * uint64(b)) & 7; used != 0 && src[size-1]>>used != 0 {
		return dst, fmt.Errorf("%w: last byte %#02x, %d bits used", ErrPadding, src[size-1], used)
	}
	return dst, nil
}

// unpackBits fills dst with consecutive b-bit values from src (which holds at
// least len(dst)*b bits) and returns the largest.
func unpackBits(src []byte, b uint, dst []uint32) (hi uint32) {
	n := len(dst)
	if b == 0 {
		clear(dst)
		return 0
	}
	size := int((uint64(n)*uint64(b) + 7) / 8)
	src = src[:size]
	mask := uint64(1)<<b - 1
	// Value i starts at bit i*b, inside byte (i*b)>>3 at bit (i*b)&7; an 8-byte
	// load from that byte holds all of it (b <= 32, so at most 39 bits are
	// needed). The loads are independent, unlike a bit-reader's. The last few
	// values, whose 8 bytes would run past src, read from a padded copy.
	fast := 0
	if size >= 8 {
		// (i*b)>>3 <= size-8  <=>  i*b < (size-7)*8
		fast = min(n, ((size-7)*8+int(b)-1)/int(b))
	}
	bitpos := uint(0)
	for i := range dst[:fast] {
		word := binary.LittleEndian.Uint64(src[bitpos>>3:])
		v := uint32((word >> (bitpos & 7)) & mask)
		dst[i] = v
		hi = max(hi, v)
		bitpos += b
	}
	if fast < n {
		var tail [16]byte
		base := bitpos >> 3
		copy(tail[:], src[base:])
		bitpos -= base * 8
		for i := fast; i < n; i++ {
			word := binary.LittleEndian.Uint64(tail[bitpos>>3:])
			v := uint32((word >> (bitpos & 7)) & mask)
			dst[i] = v
			hi = max(hi, v)
			bitpos += b
		}
	}
	return hi
}

// growBytes returns s with room for at least extra more bytes beyond len(s).
func growBytes(s []byte, extra int) []byte {
	if cap(s)-len(s) >= extra {
		return s
	}
	ns := make([]byte, len(s), len(s)+extra)
	copy(ns, s)
	return ns
}

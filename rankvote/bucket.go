package rankvote

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/fedrank/fedrank/internal/splitmix"
)

// The bucket codec is the lossy way to send a ranking: each edge's position
// is reduced to the bucket it falls in, of a layout of B buckets (bucket b
// holds positions [Bounds[b], Bounds[b+1])), and the buckets are coded per
// edge in the context of the edge's bucket in a reference ranking (for FRL,
// the global ranking the peer trained from): most edges stay in their
// bucket, so each context's symbols are skewed and a Huffman code per
// context takes about a bit per edge or less.
//
// A layer's encoding: a uvarint B, the B+1 bounds as uvarint differences,
// then per context (reference bucket) 0..B-1 one block of that context's
// symbols in edge order, coded as DeltaCoder codes its tokens (raw, RLE or
// huff0). Decoding checks that every bucket gets exactly as many edges as it
// has positions, so what decodes is a quantized permutation; it then orders
// the edges of each bucket pseudo-randomly (seeded by the caller), which
// costs the vote less than following the reference order (issue 10's
// measurements; see BENCHMARKS.md), and returns a full ranking that any
// vote takes.

// ErrBucket is returned (wrapped) for bytes that are not a bucket encoding
// of a ranking of the reference's size.
var ErrBucket = errors.New("rankvote: malformed bucket-coded ranking")

// MaxBuckets is the largest number of buckets a layout may have.
const MaxBuckets = 256

// BucketCoder encodes and decodes bucket-coded rankings. Its zero value is
// ready; it keeps buffers and is not safe for concurrent use.
type BucketCoder struct {
	dc      DeltaCoder // for its huff0 scratch and token blocks
	pos     []uint32
	bucketR []uint8 // reference bucket of each edge
	sym     []uint8
	streams [][]byte
	k32     []uint32 // sort keys
	sorter  Sorter
}

// UniformBounds returns the bounds of b equal buckets over n positions.
func UniformBounds(n, b int) []uint32 {
	out := make([]uint32, b+1)
	for i := range out {
		out[i] = uint32(i * n / b)
	}
	return out
}

// checkBounds checks a layout: 1..MaxBuckets buckets, increasing from 0 to n.
func checkBounds(bounds []uint32, n int) error {
	b := len(bounds) - 1
	if b < 1 || b > MaxBuckets || bounds[0] != 0 || int(bounds[b]) != n {
		return fmt.Errorf("%d bounds from %v to %v for %d positions", len(bounds), first(bounds), last(bounds), n)
	}
	for i := 1; i <= b; i++ {
		if bounds[i] < bounds[i-1] {
			return fmt.Errorf("bound %d (%d) below bound %d (%d)", i, bounds[i], i-1, bounds[i-1])
		}
	}
	return nil
}

func first(s []uint32) any {
	if len(s) == 0 {
		return "none"
	}
	return s[0]
}

func last(s []uint32) any {
	if len(s) == 0 {
		return "none"
	}
	return s[len(s)-1]
}

// bucketsOf writes into dst the bucket of every edge of ranking r.
func bucketsOf(dst []uint8, r []uint32, bounds []uint32) []uint8 {
	dst = grow(dst, len(r))
	b := 0
	for i, e := range r {
		for uint32(i) >= bounds[b+1] {
			b++
		}
		dst[e] = uint8(b)
	}
	return dst
}

// Encode appends to dst the bucket encoding of ranking r under the layout
// bounds, in the context of reference ref. It panics if r or ref is not a
// permutation of the same n edges or the layout is bad: the caller makes
// all three.
func (c *BucketCoder) Encode(dst []byte, r, ref, bounds []uint32) []byte {
	n := len(ref)
	var check Validator
	if len(r) != n || check.check(r, n) != nil || check.check(ref, n) != nil {
		panic("rankvote: BucketCoder.Encode: ranking and reference must be permutations of the same edges")
	}
	if err := checkBounds(bounds, n); err != nil {
		panic("rankvote: BucketCoder.Encode: layout: " + err.Error())
	}
	nb := len(bounds) - 1
	c.bucketR = bucketsOf(c.bucketR, ref, bounds)
	c.sym = bucketsOf(c.sym, r, bounds)
	c.streams = slices.Grow(c.streams[:0], nb)[:nb]
	for b := range c.streams {
		c.streams[b] = c.streams[b][:0]
	}
	for e := range n {
		ctx := c.bucketR[e]
		c.streams[ctx] = append(c.streams[ctx], c.sym[e])
	}
	dst = binary.AppendUvarint(dst, uint64(nb))
	for i := 1; i <= nb; i++ {
		dst = binary.AppendUvarint(dst, uint64(bounds[i]-bounds[i-1]))
	}
	for _, s := range c.streams {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		for start := 0; start < len(s); start += deltaBlock {
			dst = c.dc.appendBlock(dst, s[start:min(start+deltaBlock, len(s))])
		}
	}
	return dst
}

// Decode decodes one layer's bucket encoding from src against reference ref
// into dst (resized, allocated if short): the edges by bucket, each bucket's
// edges in an order drawn from seed. It returns the ranking, the layout and
// the bytes after the encoding. Any malformation is an error wrapping
// ErrBucket.
func (c *BucketCoder) Decode(dst []uint32, src []byte, ref []uint32, seed uint64) ([]uint32, []uint32, []byte, error) {
	n := len(ref)
	var check Validator
	if err := check.check(ref, n); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: reference: %w", ErrBucket, err)
	}
	nb64, k := binary.Uvarint(src)
	if k <= 0 || nb64 < 1 || nb64 > MaxBuckets {
		return nil, nil, nil, fmt.Errorf("%w: bucket count", ErrBucket)
	}
	src = src[k:]
	nb := int(nb64)
	bounds := make([]uint32, nb+1)
	for i := 1; i <= nb; i++ {
		w, k := binary.Uvarint(src)
		if k <= 0 || w > uint64(n) || uint64(bounds[i-1])+w > uint64(n) {
			return nil, nil, nil, fmt.Errorf("%w: bucket %d width", ErrBucket, i-1)
		}
		bounds[i] = bounds[i-1] + uint32(w)
		src = src[k:]
	}
	if err := checkBounds(bounds, n); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: layout: %v", ErrBucket, err)
	}
	c.bucketR = bucketsOf(c.bucketR, ref, bounds)
	// Context b's stream has one symbol per edge whose reference bucket is b.
	want := make([]int, nb)
	for _, b := range c.bucketR[:n] {
		want[b]++
	}
	c.sym = grow(c.sym, n)
	next := make([]int, nb) // read position in each context's stream
	c.streams = slices.Grow(c.streams[:0], nb)[:nb]
	for b := range nb {
		size, k := binary.Uvarint(src)
		if k <= 0 || size != uint64(want[b]) {
			return nil, nil, nil, fmt.Errorf("%w: context %d has %d symbols, want %d", ErrBucket, b, size, want[b])
		}
		src = src[k:]
		var err error
		c.dc.tokens = c.dc.tokens[:0]
		if src, err = c.dc.readBlocks(src, want[b]); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: context %d: %w", ErrBucket, b, err)
		}
		c.streams[b] = append(c.streams[b][:0], c.dc.tokens...)
	}
	count := make([]int, nb)
	for e := range n {
		ctx := c.bucketR[e]
		s := c.streams[ctx][next[ctx]]
		next[ctx]++
		if int(s) >= nb {
			return nil, nil, nil, fmt.Errorf("%w: edge %d in bucket %d of %d", ErrBucket, e, s, nb)
		}
		c.sym[e] = s
		count[s]++
	}
	for b := range nb {
		if count[b] != int(bounds[b+1]-bounds[b]) {
			return nil, nil, nil, fmt.Errorf("%w: bucket %d holds %d edges, has %d positions", ErrBucket, b, count[b], bounds[b+1]-bounds[b])
		}
	}
	dst = c.order(growUint32(dst, n), nb, seed)
	return dst, bounds, src, nil
}

// bucketKey is the pseudo-random key that orders edge e inside its bucket:
// by key, then by edge index.
func bucketKey(seed uint64, e int) uint64 { return splitmix.Derive(seed, uint64(e)) >> 8 }

// order writes into dst the edges of c.sym by bucket, each bucket's edges by
// (bucketKey, index). One 32-bit radix argsort does it: a key is the bucket
// above the top bits of the edge's bucketKey, and the argsort is stable, so
// only edges whose top bits tie (a few per layer) can be out of order;
// each run of equal 32-bit keys is then put in order by the full key. (The
// 64-bit argsort of bucket<<56 | bucketKey this replaces took 6 passes.)
func (c *BucketCoder) order(dst []uint32, nb int, seed uint64) []uint32 {
	n := len(dst)
	sb := uint(bits.Len(uint(nb - 1))) // bits of a bucket number
	c.k32 = growUint32(c.k32, n)
	for e := range n {
		c.k32[e] = uint32(c.sym[e])<<(32-sb) | uint32(bucketKey(seed, e)>>(24+sb)) // sb = 0: the shift gives 0
	}
	dst = c.sorter.ArgsortUint32(c.k32, dst)
	for i := 0; i < n; {
		j := i + 1
		for j < n && c.k32[dst[j]] == c.k32[dst[i]] {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(dst[i:j], func(a, b uint32) int {
				if d := cmp.Compare(bucketKey(seed, int(a)), bucketKey(seed, int(b))); d != 0 {
					return d
				}
				return cmp.Compare(a, b)
			})
		}
		i = j
	}
	return dst
}

// MaskBounds returns a layout for a mask that keeps positions [0, lo) and
// [hi, n): the four segments [0, lo), [lo, mid), [mid, hi) and [hi, n)
// (mid = (lo+hi)/2) get per buckets each, whose widths grow geometrically
// by ratio away from the segment's mask boundary (lo or hi), so that
// positions near a boundary, where a bucket decides whether an edge is
// kept, are told apart finely and the rest coarsely. Segments too short for
// per buckets get fewer; every bucket holds at least one position.
func MaskBounds(n, lo, hi, per int, ratio float64) []uint32 {
	mid := (lo + hi) / 2
	// Each segment as (start, end, boundary at the end?).
	segs := []struct {
		a, b  int
		atEnd bool // the boundary is the segment's end (fine buckets last)
	}{{0, lo, true}, {lo, mid, false}, {mid, hi, true}, {hi, n, false}}
	out := []uint32{0}
	for _, s := range segs {
		length := s.b - s.a
		k := min(per, length)
		if k == 0 {
			continue
		}
		// Widths w, w·ratio, ..., from the boundary outwards.
		ws := make([]float64, k)
		total := 0.0
		for i := range ws {
			ws[i] = math.Pow(ratio, float64(i))
			total += ws[i]
		}
		cuts := make([]int, 0, k)
		acc := 0.0
		for i := range k - 1 {
			acc += ws[i]
			cuts = append(cuts, int(math.Round(acc/total*float64(length))))
		}
		// From the boundary: a cut at distance d from it.
		var inner []int
		for _, d := range cuts {
			if s.atEnd {
				inner = append(inner, s.b-d)
			} else {
				inner = append(inner, s.a+d)
			}
		}
		slices.Sort(inner)
		for _, x := range inner {
			if uint32(x) > out[len(out)-1] && x < s.b {
				out = append(out, uint32(x))
			}
		}
		if uint32(s.b) > out[len(out)-1] {
			out = append(out, uint32(s.b))
		}
	}
	return out
}

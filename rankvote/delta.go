package rankvote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// The delta codec codes a ranking against a reference ranking of the same
// edges (for FRL: a peer's ranking against the global ranking it trained
// from, which the aggregator holds), losslessly.
//
// Read in the peer's order, the ranking is the sequence s_0, s_1, ... of its
// edges' positions in the reference, a permutation close to the identity
// when the peer moved little. Each s_i is coded as its Lehmer digit L_i: the
// number of reference positions below s_i that no earlier s_j took (so L_i
// is 0 when the peer keeps the reference order, and at most n-1-i). A digit
// is split as in DEFLATE's distance codes into a token, its bit length
// (0 for 0, else floor(log2 L)+1), and the bits below its leading one. The
// tokens, one byte each, go through a Huffman coder
// (github.com/klauspost/compress/huff0) or a tANS coder (its fse package),
// whichever is smaller, in blocks; the low bits, nearly uniform, are written
// as they are.
//
// A layer's encoding: a uvarint token count (n), then for each block of at
// most deltaBlock tokens a mode byte (deltaRaw: the tokens as bytes;
// deltaRLE: one token repeated; deltaHuff: a huff0 1X stream with its
// table; deltaFSE: an fse stream with its table) with a uvarint byte length
// and the bytes, then a uvarint length and
// the low bits, least significant first. Decoding checks every digit
// against the positions left, the token and bit counts, and every length,
// so anything that is not an encoding of a permutation is an error.

const (
	deltaBlock = huff0.BlockSizeMax
	deltaRaw   = 0
	deltaRLE   = 1
	deltaHuff  = 2
	deltaFSE   = 3  // tANS (github.com/klauspost/compress/fse): below a bit per token when skewed
	maxToken   = 33 // digits are below 2^32
)

// ErrDelta is returned (wrapped) by DecodeDelta for bytes that are not a
// delta encoding of a ranking of the reference's size.
var ErrDelta = errors.New("rankvote: malformed delta-coded ranking")

// DeltaCoder encodes and decodes rankings against a reference. Its zero
// value is ready; it keeps buffers between calls and is not safe for
// concurrent use.
type DeltaCoder struct {
	pos    []uint32 // reference position of each edge
	seq    []uint32 // the encoder's reference positions in ranking order
	set    []uint64 // reference positions not yet taken (1 bits)
	blk    []int32  // Fenwick tree (1-based) of the untaken positions per block of blockWords words
	cnt    []uint16 // the same counts, flat, and a zero at the end
	front  int      // every block below it has nothing untaken
	tokens []byte
	huff   huff0.Scratch
	fse    fse.Scratch
}

// Encode appends to dst the encoding of ranking r against the reference ref
// (both rankings of the same n edges: r[i] is the edge at position i). It
// panics if either is not a permutation of 0..n-1 of the same length: the
// caller holds both, so that is a bug.
func (c *DeltaCoder) Encode(dst []byte, r, ref []uint32) []byte {
	n := len(ref)
	if len(r) != n {
		panic(fmt.Sprintf("rankvote: DeltaCoder.Encode: ranking of %d edges, reference of %d", len(r), n))
	}
	var check Validator
	if err := check.check(ref, n); err != nil {
		panic(fmt.Sprintf("rankvote: DeltaCoder.Encode: reference: %v", err))
	}
	if err := check.check(r, n); err != nil {
		panic(fmt.Sprintf("rankvote: DeltaCoder.Encode: ranking: %v", err))
	}
	c.setReference(ref)
	c.resetTaken(n)
	c.tokens = c.tokens[:0]
	// The reference positions first: their loads, scattered over pos, are
	// independent of each other there, not stalled behind the rank queries
	// (17% faster on the benchmark's layer).
	c.seq = growUint32(c.seq, n)
	for i, e := range r {
		c.seq[i] = c.pos[e]
	}
	var w bitWriter
	for _, s32 := range c.seq {
		s := int(s32)
		d := uint32(c.prefix(s)) // untaken positions below s
		c.take(s)
		t := byte(bits.Len32(d))
		c.tokens = append(c.tokens, t)
		if t > 1 {
			w.write(uint64(d), uint(t-1)) // below the leading one
		}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for start := 0; start < n; start += deltaBlock {
		dst = c.appendBlock(dst, c.tokens[start:min(start+deltaBlock, n)])
	}
	low := w.bytes()
	dst = binary.AppendUvarint(dst, uint64(len(low)))
	return append(dst, low...)
}

func (c *DeltaCoder) appendBlock(dst, block []byte) []byte {
	mode, body := byte(deltaRaw), block
	c.huff.Reuse = huff0.ReusePolicyNone // every block carries its table
	out, _, err := huff0.Compress1X(block, &c.huff)
	if errors.Is(err, huff0.ErrUseRLE) {
		return append(dst, deltaRLE, block[0])
	}
	if err == nil && len(out) < len(body) {
		mode, body = deltaHuff, out
	}
	if out, err := fse.Compress(block, &c.fse); err == nil && len(out) < len(body) {
		mode, body = deltaFSE, out
	}
	dst = append(dst, mode)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// Decode decodes one layer's encoding from src against the reference ref
// into dst (resized, allocated if short), and returns the ranking and the
// bytes after the encoding. Any malformation is an error wrapping ErrDelta.
func (c *DeltaCoder) Decode(dst []uint32, src []byte, ref []uint32) ([]uint32, []byte, error) {
	n := len(ref)
	var check Validator
	if err := check.check(ref, n); err != nil {
		return nil, nil, fmt.Errorf("%w: reference: %w", ErrDelta, err)
	}
	count, k := binary.Uvarint(src)
	if k <= 0 || count != uint64(n) {
		return nil, nil, fmt.Errorf("%w: %d edges, want %d", ErrDelta, count, n)
	}
	src = src[k:]
	c.tokens = c.tokens[:0]
	src, err := c.readBlocks(src, n)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrDelta, err)
	}
	size, k := binary.Uvarint(src)
	if k <= 0 || size > uint64(len(src)-k) {
		return nil, nil, fmt.Errorf("%w: low bits length", ErrDelta)
	}
	r := bitReader{buf: src[k : k+int(size)]}
	rest := src[k+int(size):]
	c.resetTaken(n)
	dst = growUint32(dst, n)
	for i, t := range c.tokens {
		if t > maxToken-1 {
			return nil, nil, fmt.Errorf("%w: token %d at %d", ErrDelta, t, i)
		}
		var d uint64
		if t > 0 {
			d = 1
			if t > 1 {
				low, ok := r.read(uint(t - 1))
				if !ok {
					return nil, nil, fmt.Errorf("%w: low bits end at edge %d", ErrDelta, i)
				}
				d = 1<<(t-1) | low
			}
		}
		if d >= uint64(n-i) {
			return nil, nil, fmt.Errorf("%w: digit %d at position %d, only %d positions left", ErrDelta, d, i, n-i)
		}
		s := c.kth(int(d))
		c.take(s)
		dst[i] = ref[s]
	}
	if !r.done() {
		return nil, nil, fmt.Errorf("%w: %d unused low bits", ErrDelta, r.left())
	}
	return dst, rest, nil
}

// readBlocks appends to c.tokens the n tokens of the blocks at the start of
// src and returns the bytes after them.
func (c *DeltaCoder) readBlocks(src []byte, n int) ([]byte, error) {
	start := len(c.tokens)
	for len(c.tokens) < start+n {
		want := min(deltaBlock, start+n-len(c.tokens))
		if len(src) == 0 {
			return nil, fmt.Errorf("truncated before block %d", len(c.tokens)/deltaBlock)
		}
		mode := src[0]
		src = src[1:]
		switch mode {
		case deltaRLE:
			if len(src) == 0 {
				return nil, fmt.Errorf("truncated run")
			}
			for range want {
				c.tokens = append(c.tokens, src[0])
			}
			src = src[1:]
		case deltaRaw, deltaHuff, deltaFSE:
			size, k := binary.Uvarint(src)
			if k <= 0 || size > uint64(len(src)-k) {
				return nil, fmt.Errorf("block length")
			}
			body := src[k : k+int(size)]
			src = src[k+int(size):]
			if mode == deltaRaw {
				if len(body) != want {
					return nil, fmt.Errorf("raw block of %d tokens, want %d", len(body), want)
				}
				c.tokens = append(c.tokens, body...)
				break
			}
			if mode == deltaFSE {
				c.fse.DecompressLimit = want
				out, err := fse.Decompress(body, &c.fse)
				if err != nil || len(out) != want {
					return nil, fmt.Errorf("tANS block: %d tokens, want %d (%v)", len(out), want, err)
				}
				c.tokens = append(c.tokens, out...)
				break
			}
			s, rest, err := huff0.ReadTable(body, &c.huff)
			if err != nil {
				return nil, fmt.Errorf("huffman table: %w", err)
			}
			s.MaxDecodedSize = want
			out, err := s.Decompress1X(rest)
			if err != nil || len(out) != want {
				return nil, fmt.Errorf("huffman block: %d tokens, want %d (%v)", len(out), want, err)
			}
			c.tokens = append(c.tokens, out...)
		default:
			return nil, fmt.Errorf("block mode %d", mode)
		}
	}
	return src, nil
}

func (c *DeltaCoder) setReference(ref []uint32) {
	c.pos = growUint32(c.pos, len(ref))
	for i, e := range ref {
		c.pos[e] = uint32(i)
	}
}

// The untaken reference positions are a bitset (1 = untaken) with the
// untaken count of every block of blockWords words, both flat and as a
// Fenwick tree. A peer's ranking is near the reference, so the positions
// are taken roughly in order and the one a digit asks for lies a few blocks
// past the first block with an untaken position (the front): kth walks the
// flat counts from the front, and only when that takes more than
// scanBlocks blocks (an edge that moved far) descends the Fenwick tree,
// O(log(n/1024)). Inside a block it counts words, and inside a word
// select64 is branch-free. prefix (the encoder) sums the Fenwick tree: the
// walk from the front did not pay there. Measured on the benchmark's
// layer (thread CPU time, same session): decoding 11.5 ms against 14.9 ms
// for the Fenwick tree alone with a byte-loop select; 4- or 8-word blocks,
// 4-word groups inside blocks and a branch-free word count were all
// slower. (A Fenwick tree over single positions decoded it in 22 ms;
// walking from the front alone was slower on real rankings, where a few
// edges move far.)
const (
	blockWords = 16
	scanBlocks = 8
)

// resetTaken marks all n positions untaken.
func (c *DeltaCoder) resetTaken(n int) {
	words := (n + 63) / 64
	c.set = grow(c.set, words)
	for i := range c.set {
		c.set[i] = ^uint64(0)
	}
	if r := n % 64; r != 0 {
		c.set[words-1] = 1<<r - 1
	}
	blocks := (words + blockWords - 1) / blockWords
	c.cnt = grow(c.cnt, blocks+1) // a zero sentinel at the end
	c.blk = grow(c.blk, blocks+1)
	c.blk[0], c.cnt[blocks] = 0, 0
	for b := range blocks {
		cnt := 0
		for _, w := range c.set[b*blockWords : min((b+1)*blockWords, words)] {
			cnt += bits.OnesCount64(w)
		}
		c.cnt[b] = uint16(cnt)
		c.blk[b+1] = int32(cnt)
	}
	for i := 1; i <= blocks; i++ { // the Fenwick tree of the counts, in place
		if j := i + i&-i; j <= blocks {
			c.blk[j] += c.blk[i]
		}
	}
	c.front = 0
}

// advanceFront moves the front past blocks with nothing untaken.
func (c *DeltaCoder) advanceFront() {
	for c.front < len(c.cnt)-1 && c.cnt[c.front] == 0 {
		c.front++
	}
}

// prefix is the number of untaken positions below s.
func (c *DeltaCoder) prefix(s int) int {
	w, b := s/64, s/64/blockWords
	sum := 0
	for i := b; i > 0; i -= i & -i {
		sum += int(c.blk[i])
	}
	for i := b * blockWords; i < w; i++ {
		sum += bits.OnesCount64(c.set[i])
	}
	return sum + bits.OnesCount64(c.set[w]&(1<<(s%64)-1))
}

// take marks position s taken.
func (c *DeltaCoder) take(s int) {
	c.set[s/64] &^= 1 << (s % 64)
	b := s / 64 / blockWords
	c.cnt[b]--
	for i := b + 1; i < len(c.blk); i += i & -i {
		c.blk[i]--
	}
}

// kth is the untaken position with d untaken positions below it; d must be
// below the number untaken.
func (c *DeltaCoder) kth(d int) int {
	c.advanceFront()
	b, rem := c.front, int32(d)
	for k := 0; ; k++ {
		if k == scanBlocks {
			b, rem = c.descend(int32(d))
			break
		}
		n := int32(c.cnt[b])
		if n > rem {
			break
		}
		rem -= n
		b++
	}
	// Block b (0-based) holds it, after rem untaken positions.
	w := b * blockWords
	for ; ; w++ {
		n := int32(bits.OnesCount64(c.set[w]))
		if n > rem {
			break
		}
		rem -= n
	}
	return w*64 + select64(c.set[w], int(rem))
}

// descend finds the block of the untaken position with d untaken positions
// below it in the Fenwick tree, and how many of them are in the block.
func (c *DeltaCoder) descend(d int32) (int, int32) {
	blocks := len(c.blk) - 1
	b, rem := 0, d
	for step := 1 << (bits.Len(uint(blocks)) - 1); step > 0; step >>= 1 {
		if next := b + step; next <= blocks && c.blk[next] <= rem {
			b = next
			rem -= c.blk[next]
		}
	}
	return b, rem
}

// select64 is the index of the set bit of x with r set bits below it; x has
// more than r set bits. It counts the set bits of every byte at once,
// finds the byte by comparing all the running counts with r at once
// (SWAR), and looks the bit up in that byte.
func select64(x uint64, r int) int {
	const l8, h8 = 0x0101010101010101, 0x8080808080808080
	s := x - (x>>1)&0x5555555555555555
	s = s&0x3333333333333333 + (s>>2)&0x3333333333333333
	s = (s + s>>4) & 0x0f0f0f0f0f0f0f0f
	s *= l8 // byte i: the set bits of bytes 0..i
	// Byte i's high bit: its running count is at most r (no lane borrows:
	// r|0x80 >= 0x80 > 64 >= a count).
	k := bits.OnesCount64((uint64(r)*l8 | h8 - s) & h8) // the byte holding it
	below := int(s<<8>>(8*k)) & 0xff                    // set bits below byte k
	return 8*k + int(selectInByte[uint8(x>>(8*k))][r-below])
}

// selectInByte[b][r] is the index of the set bit of b with r set bits below it.
var selectInByte = func() (t [256][8]uint8) {
	for b := range 256 {
		r := 0
		for i := range 8 {
			if b>>i&1 == 1 {
				t[b][r] = uint8(i)
				r++
			}
		}
	}
	return t
}()

// bitWriter writes bits least significant first.
type bitWriter struct {
	buf  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(v uint64, n uint) {
	v &= 1<<n - 1
	for n > 0 {
		k := min(n, 64-w.nacc)
		w.acc |= (v & (1<<k - 1)) << w.nacc
		w.nacc += k
		v >>= k
		n -= k
		for w.nacc >= 8 {
			w.buf = append(w.buf, byte(w.acc))
			w.acc >>= 8
			w.nacc -= 8
		}
	}
}

func (w *bitWriter) bytes() []byte {
	if w.nacc > 0 {
		w.buf = append(w.buf, byte(w.acc))
		w.acc, w.nacc = 0, 0
	}
	return w.buf
}

type bitReader struct {
	buf []byte
	off uint // bits read
}

func (r *bitReader) read(n uint) (uint64, bool) { // n <= 32
	if r.off+n > uint(len(r.buf))*8 {
		return 0, false
	}
	i := r.off / 8
	var w uint64
	if int(i)+8 <= len(r.buf) {
		w = binary.LittleEndian.Uint64(r.buf[i:])
	} else {
		var tmp [8]byte
		copy(tmp[:], r.buf[i:])
		w = binary.LittleEndian.Uint64(tmp[:])
	}
	v := w >> (r.off % 8) & (1<<n - 1)
	r.off += n
	return v, true
}

// done tells whether every whole byte was used and the padding is zero.
func (r *bitReader) done() bool {
	if (r.off+7)/8 != uint(len(r.buf)) {
		return false
	}
	if r.off%8 != 0 && r.buf[len(r.buf)-1]>>(r.off%8) != 0 {
		return false
	}
	return true
}

func (r *bitReader) left() int { return len(r.buf)*8 - int(r.off) }

package rankvote

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestBitsPerAndPackedSize(t *testing.T) {
	cases := []struct{ n, bits, size int }{
		{0, 0, 0}, {1, 0, 0}, {2, 1, 1}, {3, 2, 1}, {4, 2, 1}, {5, 3, 2}, {7, 3, 3}, {8, 3, 3},
		{9, 4, 5}, {255, 8, 255}, {256, 8, 256}, {257, 9, 290}, {1000, 10, 1250},
		{30000, 15, 56250}, {235200, 18, 529200}, {266200, 19, 632225},
		{1 << 20, 20, 2621440}, {1<<20 + 1, 21, 2752515}, {5000000, 23, 14375000},
	}
	for _, tc := range cases {
		if got := BitsPer(tc.n); got != tc.bits {
			t.Errorf("BitsPer(%d) = %d, want %d", tc.n, got, tc.bits)
		}
		if got := PackedSize(tc.n); got != tc.size {
			t.Errorf("PackedSize(%d) = %d, want %d", tc.n, got, tc.size)
		}
	}
}

func TestPackGolden(t *testing.T) {
	// n=5: 3 bits each, little-endian bit order:
	// 4=100 at bits 0-2, 0 at 3-5, 3=011 at 6-8, 1=001 at 9-11, 2=010 at 12-14, bit 15 padding.
	got := Pack(nil, []uint32{4, 0, 3, 1, 2}, 5)
	if want := []byte{0xc4, 0x22}; !bytes.Equal(got, want) {
		t.Fatalf("Pack = %#x, want %#x", got, want)
	}
	// Appends after what dst holds.
	got = Pack([]byte{0xaa}, []uint32{1, 0}, 2)
	if want := []byte{0xaa, 0x01}; !bytes.Equal(got, want) {
		t.Fatalf("Pack appending = %#x, want %#x", got, want)
	}
}

func TestPackRoundTrip(t *testing.T) {
	rng := newRand(9)
	sizes := []int{0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 255, 256, 257, 1000, 4097, 30000, 235200}
	var buf []byte
	var dst []uint32
	for _, n := range sizes {
		perms := [][]uint32{randPerm(rng, n), identity(make([]uint32, n))}
		rev := identity(make([]uint32, n))
		slices.Reverse(rev)
		perms = append(perms, rev)
		for k, r := range perms {
			buf = Pack(buf[:0], r, n)
			if len(buf) != PackedSize(n) {
				t.Fatalf("n=%d: packed %d bytes, want %d", n, len(buf), PackedSize(n))
			}
			var err error
			dst, err = Unpack(buf, n, dst)
			if err != nil {
				t.Fatalf("n=%d perm %d: %v", n, k, err)
			}
			if !slices.Equal(dst, r) {
				t.Fatalf("n=%d perm %d: round trip differs", n, k)
			}
		}
	}
}

// TestPackBitsAllWidths checks every bit width 1..32 and many lengths with
// random values, on the internal coder (rankings of 2^32 edges do not fit a test).
func TestPackBitsAllWidths(t *testing.T) {
	rng := newRand(10)
	for b := uint(1); b <= 32; b++ {
		for _, count := range []int{1, 2, 3, 7, 8, 9, 63, 64, 65, 333, 1000} {
			r := make([]uint32, count)
			for i := range r {
				r[i] = uint32(rng.Uint64N(1 << b))
			}
			r[rng.IntN(count)] = uint32(1<<b - 1)
			prefix := []byte{0x5a}
			packed, hi := packBits(slices.Clone(prefix), r, b)
			if hi != uint32(1<<b-1) {
				t.Fatalf("b=%d: max %d", b, hi)
			}
			if want := 1 + (count*int(b)+7)/8; len(packed) != want || packed[0] != 0x5a {
				t.Fatalf("b=%d count=%d: %d bytes, want %d after the prefix", b, count, len(packed), want)
			}
			// Reference: bit by bit.
			ref := make([]byte, (count*int(b)+7)/8)
			for i, v := range r {
				for j := range b {
					if v>>j&1 != 0 {
						pos := uint(i)*b + j
						ref[pos/8] |= 1 << (pos % 8)
					}
				}
			}
			if !bytes.Equal(packed[1:], ref) {
				t.Fatalf("b=%d count=%d: packed bytes differ from the bit-by-bit reference", b, count)
			}
			got := make([]uint32, count)
			if hi := unpackBits(ref, b, got); hi != uint32(1<<b-1) || !slices.Equal(got, r) {
				t.Fatalf("b=%d count=%d: unpack differs", b, count)
			}
		}
	}
}

func TestUnpackRejects(t *testing.T) {
	good := Pack(nil, []uint32{4, 0, 3, 1, 2}, 5) // 0xc4 0x22
	cases := []struct {
		name string
		src  []byte
		n    int
		want error
	}{
		{"short", good[:1], 5, ErrPackedLength},
		{"long", append(slices.Clone(good), 0), 5, ErrPackedLength},
		{"empty for n=2", nil, 2, ErrPackedLength},
		{"bytes for n=1", []byte{0}, 1, ErrPackedLength},
		{"negative n", nil, -1, ErrSize},
		{"huge n", nil, func() int { n := MaxSize; return n + 1 }(), ErrSize}, // negative on 32-bit: rejected too
		{"padding", []byte{0xc4, 0xa2}, 5, ErrPadding},
		{"out of range", []byte{0x07, 0x00}, 5, ErrInvalidRanking},       // value 7 at index 0
		{"out of range, last", []byte{0xc4, 0x72}, 5, ErrInvalidRanking}, // value 7 at index 4
		{"n=3 value 3", []byte{0x03}, 3, ErrInvalidRanking},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unpack(tc.src, tc.n, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	_, err := Unpack([]byte{0xc4, 0x72}, 5, nil)
	var ire *InvalidRankingError
	if !errors.As(err, &ire) || ire.Index != 4 || ire.Value != 7 || ire.Reason != ReasonRange {
		t.Errorf("got %v, want value 7 out of range at index 4", err)
	}
}

func TestUnpackDoesNotCheckPermutation(t *testing.T) {
	r := []uint32{1, 1, 1}
	got, err := Unpack(Pack(nil, r, 3), 3, nil)
	if err != nil || !slices.Equal(got, r) {
		t.Fatalf("got %v, %v; Unpack must decode duplicates (Validate rejects them)", got, err)
	}
	if Validate(got, 3) == nil {
		t.Fatal("Validate accepted duplicates")
	}
}

func TestPackPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    []uint32
		n    int
	}{
		{"value too big", []uint32{0, 5, 1}, 3},
		{"wrong length", []uint32{0, 1}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			Pack(nil, tc.r, tc.n)
		})
	}
}

func TestPackUnpackAllocs(t *testing.T) {
	r := randPerm(newRand(11), 30000)
	buf := Pack(nil, r, len(r))
	dst, _ := Unpack(buf, len(r), nil)
	a := testing.AllocsPerRun(5, func() {
		buf = Pack(buf[:0], r, len(r))
		dst, _ = Unpack(buf, len(r), dst)
	})
	if a != 0 {
		t.Errorf("Pack+Unpack with warm buffers allocate %v times", a)
	}
}

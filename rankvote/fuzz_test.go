package rankvote

import (
	"bytes"
	"errors"
	"sort"
	"testing"
)

// Run the fuzzers with a bounded minimisation, e.g.
//
//	go test -run x -fuzz FuzzUnpack -fuzztime 20s -fuzzminimizetime 200x ./rankvote/
//
// The default (60 s) lets the fuzzer spend most of a short run minimising each
// new interesting input of a few hundred bytes (it tries removing every
// sub-slice), which shows as "0/sec" and, if interrupted, as a false hang.

// FuzzUnpack: arbitrary bytes and n never panic, and whatever decodes re-packs
// to the same bytes (the encoding is canonical).
func FuzzUnpack(f *testing.F) {
	f.Add([]byte{}, 0)
	f.Add([]byte{}, 1)
	f.Add([]byte{0xc4, 0x22}, 5)
	f.Add([]byte{0xc4, 0xa2}, 5)
	f.Add([]byte{0xff}, 3)
	f.Add(Pack(nil, randPerm(newRand(20), 300), 300), 300)
	f.Add(Pack(nil, randPerm(newRand(21), 257), 257), 257)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		checkUnpack(t, data, n)
		// Also at a size that matches len(data) exactly, so decoding is reached.
		if m, ok := sizeFor(len(data), n); ok {
			checkUnpack(t, data, m)
		}
	})
}

func checkUnpack(t *testing.T, data []byte, n int) {
	dst, err := Unpack(data, n, nil)
	if err != nil {
		if !errors.Is(err, ErrSize) && !errors.Is(err, ErrPackedLength) &&
			!errors.Is(err, ErrPadding) && !errors.Is(err, ErrInvalidRanking) {
			t.Fatalf("n=%d: unexpected error %v", n, err)
		}
		return
	}
	if len(dst) != n {
		t.Fatalf("decoded %d values, want %d", len(dst), n)
	}
	if again := Pack(nil, dst, n); !bytes.Equal(again, data) {
		t.Fatalf("n=%d: repacking gives %x, want %x", n, again, data)
	}
}

// sizeFor picks, using seed, an n with PackedSize(n) == size, if there is one.
func sizeFor(size, seed int) (int, bool) {
	limit := 8*size + 2
	lo := sort.Search(limit, func(n int) bool { return PackedSize(n) >= size })
	hi := sort.Search(limit, func(n int) bool { return PackedSize(n) > size }) - 1
	if lo > hi {
		return 0, false
	}
	if seed < 0 {
		seed = -(seed + 1)
	}
	return lo + seed%(hi-lo+1), true
}

// FuzzValidate compares the bitset validator with a map-based reference,
// including which position and value the error names.
func FuzzValidate(f *testing.F) {
	f.Add([]byte{}, int8(0))
	f.Add([]byte{0}, int8(0))
	f.Add([]byte{2, 0, 1}, int8(0))
	f.Add([]byte{2, 0, 2}, int8(0))
	f.Add([]byte{1, 0}, int8(1))
	f.Add([]byte{3, 0, 1}, int8(0))
	f.Fuzz(func(t *testing.T, data []byte, delta int8) {
		r := make([]uint32, len(data))
		for i, b := range data {
			r[i] = uint32(b)
		}
		n := max(len(r)+int(delta)%3, 0)
		var v Validator
		got := v.check(r, n)
		want := naiveValidate(r, n)
		if (got == nil) != (want == nil) {
			t.Fatalf("n=%d r=%v: got %v, want %v", n, r, got, want)
		}
		if got != nil && *got != *want {
			t.Fatalf("n=%d r=%v: got %+v, want %+v", n, r, *got, *want)
		}
		if err := Validate(r, n); (err == nil) != (want == nil) {
			t.Fatalf("Validate and Validator disagree")
		}
	})
}

// naiveValidate is the reference: a map of the values seen.
func naiveValidate(r []uint32, n int) *InvalidRankingError {
	if len(r) != n {
		return &InvalidRankingError{Layer: -1, Reason: ReasonLength, Index: len(r), N: n}
	}
	seen := map[uint32]bool{}
	for i, e := range r {
		if int(e) >= n {
			return &InvalidRankingError{Layer: -1, Reason: ReasonRange, Index: i, Value: e, N: n}
		}
		if seen[e] {
			return &InvalidRankingError{Layer: -1, Reason: ReasonDuplicate, Index: i, Value: e, N: n}
		}
		seen[e] = true
	}
	return nil
}

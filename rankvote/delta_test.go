package rankvote

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// nearby returns ref with every edge moved by a random displacement of
// about spread positions: what a peer sends after local training.
func nearby(rng *rand.Rand, ref []uint32, spread float64) []uint32 {
	key := make([]float64, len(ref))
	for i := range key {
		key[i] = float64(i) + rng.NormFloat64()*spread
	}
	idx := stableArgsort(len(ref), func(a, b int) int {
		switch {
		case key[a] < key[b]:
			return -1
		case key[a] > key[b]:
			return 1
		}
		return 0
	})
	out := make([]uint32, len(ref))
	for i, j := range idx {
		out[i] = ref[j]
	}
	return out
}

func TestDeltaRoundTrip(t *testing.T) {
	rng := newRand(1)
	var enc, dec DeltaCoder
	for _, n := range []int{0, 1, 2, 3, 17, 1000, 300_000} {
		ref := randPerm(rng, n)
		rev := slices.Clone(ref)
		slices.Reverse(rev)
		cases := map[string][]uint32{
			"same":     slices.Clone(ref),
			"reversed": rev,
			"random":   randPerm(rng, n),
			"near 3":   nearby(rng, ref, 3),
			"near 1%":  nearby(rng, ref, 0.01*float64(n)),
		}
		for name, r := range cases {
			b := enc.Encode([]byte("head"), r, ref)
			got, rest, err := dec.Decode(nil, append(b[4:], "tail"...), ref)
			if err != nil {
				t.Fatalf("n=%d %s: %v", n, name, err)
			}
			if !slices.Equal(got, r) || string(rest) != "tail" || string(b[:4]) != "head" {
				t.Fatalf("n=%d %s: round trip differs (rest %q)", n, name, rest)
			}
			if n >= 1000 {
				t.Logf("n=%d %s: %.2f bits per edge", n, name, float64(8*(len(b)-4))/float64(n))
			}
		}
	}
}

// TestDeltaSize: close rankings cost far less than a packed permutation
// (ceil(log2 n) bits per edge), far ones about as much.
func TestDeltaSize(t *testing.T) {
	rng := newRand(2)
	const n = 235_200 // the MNIST net's first layer
	ref := randPerm(rng, n)
	var c DeltaCoder
	bitsPer := func(r []uint32) float64 { return float64(8*len(c.Encode(nil, r, ref))) / n }
	packed := 18.0
	if b := bitsPer(slices.Clone(ref)); b > 0.1 {
		t.Errorf("the reference itself: %.3f bits per edge", b)
	}
	if b := bitsPer(nearby(rng, ref, 0.01*n)); b > 13.5 {
		t.Errorf("displacements of about 1%% of the layer: %.2f bits per edge, want below 13.5", b)
	}
	if b := bitsPer(nearby(rng, ref, 30)); b > 7.5 {
		t.Errorf("displacements of about 30 positions: %.2f bits per edge, want below 7.5", b)
	}
	if b := bitsPer(randPerm(rng, n)); b > packed+0.5 {
		t.Errorf("a random ranking: %.2f bits per edge, packed is %v", b, packed)
	}
}

func TestDeltaRejectsMalformed(t *testing.T) {
	rng := newRand(3)
	ref := randPerm(rng, 500)
	var c DeltaCoder
	good := c.Encode(nil, nearby(rng, ref, 20), ref)
	bad := map[string][]byte{
		"empty":        nil,
		"wrong count":  c.Encode(nil, randPerm(rng, 499), randPerm(rng, 499)),
		"truncated":    good[:len(good)-1],
		"padding bits": append(slices.Clone(good[:len(good)-1]), good[len(good)-1]|0x80),
		"bad mode":     append([]byte{good[0], good[1], 9}, good[3:]...),
		"huge block":   append(slices.Clone(good[:3]), 0xff, 0xff, 0xff, 0x0f),
		"all ones tok": append(append(slices.Clone(good[:2]), deltaRLE, 30), 0),
	}
	for name, b := range bad {
		got, _, err := c.Decode(nil, b, ref)
		if err == nil {
			t.Errorf("%s: decoded %d edges", name, len(got))
		} else if !errors.Is(err, ErrDelta) {
			t.Errorf("%s: %v does not wrap ErrDelta", name, err)
		}
	}
}

func FuzzDeltaDecode(f *testing.F) {
	rng := newRand(4)
	ref := randPerm(rng, 64)
	var c DeltaCoder
	f.Add(c.Encode(nil, nearby(rng, ref, 4), ref))
	f.Add(c.Encode(nil, randPerm(rng, 64), ref))
	f.Add([]byte{64, deltaRLE, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d DeltaCoder
		got, _, err := d.Decode(nil, b, ref)
		if err != nil {
			if !errors.Is(err, ErrDelta) {
				t.Fatalf("%v does not wrap ErrDelta", err)
			}
			return
		}
		var v Validator
		if e := v.check(got, len(ref)); e != nil {
			t.Fatalf("decoded a non-permutation: %v", e)
		}
		// What decodes re-encodes to a ranking that decodes the same.
		again, _, err := d.Decode(nil, d.Encode(nil, got, ref), ref)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("re-encoding: %v", err)
		}
	})
}

func BenchmarkDelta(b *testing.B) {
	rng := newRand(5)
	const n = 235_200
	ref := randPerm(rng, n)
	r := nearby(rng, ref, 0.01*n)
	var c DeltaCoder
	buf := c.Encode(nil, r, ref)
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			buf = c.Encode(buf[:0], r, ref)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Medges/s")
		b.ReportMetric(float64(8*len(buf))/n, "bits/edge")
	})
	b.Run("decode", func(b *testing.B) {
		var out []uint32
		for b.Loop() {
			var err error
			if out, _, err = c.Decode(out, buf, ref); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Medges/s")
	})
	// The worst case a peer can send: a ranking unrelated to the reference.
	far := c.Encode(nil, randPerm(rng, n), ref)
	b.Run("decode-random", func(b *testing.B) {
		var out []uint32
		for b.Loop() {
			var err error
			if out, _, err = c.Decode(out, far, ref); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Medges/s")
		b.ReportMetric(float64(8*len(far))/n, "bits/edge")
	})
}

func TestSelect64(t *testing.T) {
	rng := newRand(6)
	for range 20000 {
		x := rng.Uint64()
		switch rng.IntN(4) {
		case 0:
			x &= rng.Uint64() & rng.Uint64() // sparse
		case 1:
			x |= rng.Uint64() | rng.Uint64() // dense
		case 2:
			x = ^uint64(0) << rng.IntN(64)
		}
		r := 0
		for i := range 64 {
			if x>>i&1 == 1 {
				if got := select64(x, r); got != i {
					t.Fatalf("select64(%#x, %d) = %d, want %d", x, r, got, i)
				}
				r++
			}
		}
	}
}

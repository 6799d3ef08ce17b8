package rankvote

import (
	"cmp"
	"errors"
	"slices"
	"testing"
)

// bucketsOfRanking is the bucket of every edge of r.
func bucketsOfRanking(r, bounds []uint32) []uint8 { return bucketsOf(nil, r, bounds) }

func TestBucketRoundTrip(t *testing.T) {
	rng := newRand(1)
	var c BucketCoder
	for _, n := range []int{1, 2, 17, 1000, 300_000} {
		ref := randPerm(rng, n)
		for _, nb := range []int{1, 2, 16, 64} {
			if nb > n {
				continue
			}
			bounds := UniformBounds(n, nb)
			for name, r := range map[string][]uint32{
				"same":    slices.Clone(ref),
				"random":  randPerm(rng, n),
				"near 1%": nearby(rng, ref, 0.01*float64(n)),
			} {
				b := c.Encode([]byte("x"), r, ref, bounds)
				got, gotBounds, rest, err := c.Decode(nil, append(b[1:], 'y'), ref, 7)
				if err != nil {
					t.Fatalf("n=%d B=%d %s: %v", n, nb, name, err)
				}
				if string(rest) != "y" || !slices.Equal(gotBounds, bounds) {
					t.Fatalf("n=%d B=%d %s: rest %q bounds %v", n, nb, name, rest, gotBounds)
				}
				if err := Validate(got, n); err != nil {
					t.Fatalf("n=%d B=%d %s: %v", n, nb, name, err)
				}
				// Every edge is in its bucket.
				if !slices.Equal(bucketsOfRanking(got, bounds), bucketsOfRanking(r, bounds)) {
					t.Fatalf("n=%d B=%d %s: an edge changed bucket", n, nb, name)
				}
				if n >= 1000 && name == "near 1%" {
					t.Logf("n=%d B=%d %s: %.3f bits per edge", n, nb, name, float64(8*(len(b)-1))/float64(n))
				}
			}
		}
	}
}

func TestBucketDecodeOrderIsSeeded(t *testing.T) {
	rng := newRand(2)
	ref := randPerm(rng, 500)
	r := nearby(rng, ref, 30)
	var c BucketCoder
	b := c.Encode(nil, r, ref, UniformBounds(500, 8))
	x, _, _, _ := c.Decode(nil, b, ref, 1)
	x = slices.Clone(x)
	y, _, _, _ := c.Decode(nil, b, ref, 1)
	z, _, _, _ := c.Decode(nil, b, ref, 2)
	if !slices.Equal(x, y) {
		t.Error("the same seed decoded two orders")
	}
	if slices.Equal(x, z) {
		t.Error("two seeds decoded the same order")
	}
}

func TestBucketRejectsMalformed(t *testing.T) {
	rng := newRand(3)
	ref := randPerm(rng, 400)
	var c BucketCoder
	bounds := UniformBounds(400, 4)
	good := c.Encode(nil, nearby(rng, ref, 10), ref, bounds)
	// A payload that claims every edge stays in bucket 0: the counts are wrong.
	var all0 []byte
	{
		var d BucketCoder
		all0 = d.Encode(nil, ref, ref, bounds) // contexts hold their own bucket
	}
	tampered := slices.Clone(all0)
	tampered[len(tampered)-1] ^= 1 // an RLE symbol now names another bucket
	for name, b := range map[string][]byte{
		"empty":          nil,
		"zero buckets":   {0},
		"too many":       {0xff, 0x7f},
		"truncated":      good[:len(good)-1],
		"wrong sizes":    append([]byte{2, 100, 100}, good[6:]...),
		"wrong counts":   tampered,
		"other size ref": c.Encode(nil, randPerm(rng, 399), randPerm(rng, 399), UniformBounds(399, 4)),
	} {
		if _, _, _, err := c.Decode(nil, b, ref, 1); err == nil {
			t.Errorf("%s: decoded", name)
		} else if !errors.Is(err, ErrBucket) {
			t.Errorf("%s: %v does not wrap ErrBucket", name, err)
		}
	}
}

func FuzzBucketDecode(f *testing.F) {
	rng := newRand(4)
	ref := randPerm(rng, 64)
	var c BucketCoder
	f.Add(c.Encode(nil, nearby(rng, ref, 4), ref, UniformBounds(64, 8)))
	f.Add(c.Encode(nil, randPerm(rng, 64), ref, UniformBounds(64, 3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d BucketCoder
		got, bounds, _, err := d.Decode(nil, b, ref, 9)
		if err != nil {
			if !errors.Is(err, ErrBucket) {
				t.Fatalf("%v does not wrap ErrBucket", err)
			}
			return
		}
		if err := Validate(got, len(ref)); err != nil {
			t.Fatalf("decoded a non-permutation: %v", err)
		}
		again, _, _, err := d.Decode(nil, d.Encode(nil, got, ref, bounds), ref, 9)
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("re-encoding: %v", err)
		}
	})
}

func BenchmarkBucket(b *testing.B) {
	rng := newRand(5)
	const n = 235_200
	ref := randPerm(rng, n)
	r := nearby(rng, ref, 0.01*n)
	bounds := MaskBounds(n, n/4, 3*n/4, 4, 2)
	var c BucketCoder
	buf := c.Encode(nil, r, ref, bounds)
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			buf = c.Encode(buf[:0], r, ref, bounds)
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Medges/s")
		b.ReportMetric(float64(8*len(buf))/n, "bits/edge")
	})
	b.Run("decode", func(b *testing.B) {
		var out []uint32
		for b.Loop() {
			var err error
			if out, _, _, err = c.Decode(out, buf, ref, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Medges/s")
	})
}

// TestBucketOrderIsTheReferenceOrder checks the decoder's order against
// its definition (what the 64-bit argsort of bucket<<56 | bucketKey gave
// before): by bucket, then by bucketKey, then by edge index. 256 buckets
// over 300,000 edges leave 24 bits of key to the radix sort, so some
// edges tie on them and the tie repair is exercised.
func TestBucketOrderIsTheReferenceOrder(t *testing.T) {
	rng := newRand(3)
	for _, n := range []int{1, 5, 1000, 300_000} {
		for _, nb := range []int{1, 2, 16, 256} {
			if nb > n {
				continue
			}
			ref := randPerm(rng, n)
			bounds := UniformBounds(n, nb)
			var c BucketCoder
			b := c.Encode(nil, nearby(rng, ref, 0.01*float64(n)+1), ref, bounds)
			got, _, _, err := c.Decode(nil, b, ref, uint64(n*nb))
			if err != nil {
				t.Fatal(err)
			}
			sym := slices.Clone(c.sym[:n])
			want := stableArgsort(n, func(a, b int) int {
				ka := uint64(sym[a])<<56 | bucketKey(uint64(n*nb), a)
				kb := uint64(sym[b])<<56 | bucketKey(uint64(n*nb), b)
				return cmp.Compare(ka, kb)
			})
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d B=%d: the order differs from the reference order", n, nb)
			}
		}
	}
}

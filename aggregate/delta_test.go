package aggregate

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/rankvote"
)

// Every ranking aggregator gives the same model from delta-coded updates as
// from the same rankings packed, and rejects a malformed delta-coded update
// without changing its vote.
func TestRankingAggregatorsDecodeDelta(t *testing.T) {
	spec := Spec{Seed: 3, Sizes: []int{30, 20, 5}}
	layers := spec.Layers()
	rng := rand.New(rand.NewPCG(1, 2))
	perm := func(n int) []uint32 { return randPerm(rng, n) }
	global := make([][]uint32, len(layers))
	for l, n := range layers {
		global[l] = perm(n)
	}
	gm := spec.EncodeFRLModel(global)
	var voters [][][]uint32
	for range 7 {
		r := make([][]uint32, len(layers))
		for l := range layers {
			r[l] = append([]uint32(nil), global[l]...)
			for range 10 { // a few local swaps: a peer that moved a little
				i := rng.IntN(len(r[l]) - 1)
				r[l][i], r[l][i+1] = r[l][i+1], r[l][i]
			}
		}
		voters = append(voters, r)
	}
	makers := []func() (Aggregator, error){
		func() (Aggregator, error) { return NewVote(spec) },
		func() (Aggregator, error) { return NewFilteredVote(spec) },
		func() (Aggregator, error) { return NewMedianVote(spec) },
		func() (Aggregator, error) { return NewClampedVote(spec, 0) },
	}
	var c rankvote.DeltaCoder
	for _, mk := range makers {
		run := func(delta bool) []byte {
			a := must(mk())
			if err := a.Begin(1, gm); err != nil {
				t.Fatal(err)
			}
			for i, r := range voters {
				var p []byte
				if delta {
					p = spec.EncodeFRLDeltaUpdate(nil, r, global, &c)
				} else {
					p = spec.EncodeFRLUpdate(nil, r)
				}
				if err := a.Add(Update{Peer: fmt.Sprint("p", i), Payload: p}); err != nil {
					t.Fatalf("%s: %v", a.Name(), err)
				}
				if delta && i == 2 {
					bad := spec.EncodeFRLDeltaUpdate(nil, r, global, &c)
					bad = bad[:len(bad)-1]
					if err := a.Add(Update{Peer: "bad", Payload: bad}); !errors.Is(err, ErrMalformed) {
						t.Fatalf("%s: truncated delta update: %v", a.Name(), err)
					}
					if a.Len() != 3 {
						t.Fatalf("%s: %d updates after a rejected one, want 3", a.Name(), a.Len())
					}
				}
			}
			m, err := a.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		packed, delta := run(false), run(true)
		if !bytes.Equal(packed, delta) {
			t.Errorf("%s: the model from delta-coded updates differs from the packed one", must(mk()).Name())
		}
	}
	// Bucket-coded updates: accepted by every ranking aggregator, the
	// decoded ranking keeps every edge in its bucket, and a truncated one
	// is rejected.
	bounds := make([][]uint32, len(layers))
	for l, n := range layers {
		bounds[l] = rankvote.UniformBounds(n, min(4, n))
	}
	for _, mk := range makers {
		a := must(mk())
		if err := a.Begin(1, gm); err != nil {
			t.Fatal(err)
		}
		for i, r := range voters {
			b := spec.EncodeFRLBucketUpdate(nil, r, global, bounds, nil)
			if err := a.Add(Update{Peer: fmt.Sprint("p", i), Payload: b}); err != nil {
				t.Fatalf("%s: %v", a.Name(), err)
			}
			if err := a.Add(Update{Peer: "bad", Payload: b[:len(b)-1]}); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: truncated bucket update: %v", a.Name(), err)
			}
		}
		if _, err := a.Finalize(); err != nil || a.Len() != len(voters) {
			t.Fatalf("%s: %v, %d updates", a.Name(), err, a.Len())
		}
	}
	// With the federation's format required, every other format is
	// rejected as malformed, the vote unchanged; so is a bucket update
	// of a finer layout.
	finer, other := make([][]uint32, len(layers)), make([][]uint32, len(layers))
	for l, n := range layers {
		finer[l] = rankvote.UniformBounds(n, min(5, n))
		other[l] = []uint32{0, 1, 2, 3, uint32(n)} // 4 buckets, as bounds, but others
	}
	for _, mk := range makers {
		a := must(mk())
		a.(RankingFormatter).RequireRankingFormat(FormatBucket, bounds)
		if err := a.Begin(1, gm); err != nil {
			t.Fatal(err)
		}
		if err := a.Add(Update{Peer: "ok", Payload: spec.EncodeFRLBucketUpdate(nil, voters[0], global, bounds, nil)}); err != nil {
			t.Fatalf("%s: the federation's format: %v", a.Name(), err)
		}
		for what, b := range map[string][]byte{
			"packed":       spec.EncodeFRLUpdate(nil, voters[1]),
			"delta-coded":  spec.EncodeFRLDeltaUpdate(nil, voters[1], global, nil),
			"finer layout": spec.EncodeFRLBucketUpdate(nil, voters[1], global, finer, nil),
			"other bounds": spec.EncodeFRLBucketUpdate(nil, voters[1], global, other, nil),
		} {
			err := a.Add(Update{Peer: "other", Payload: b})
			if !errors.Is(err, ErrMalformed) || a.Len() != 1 {
				t.Fatalf("%s: a %s update in a bucket federation: %v (%d counted)", a.Name(), what, err, a.Len())
			}
			want := map[string]string{
				"finer layout": "a 5-bucket layout, not the federation's",
				"other bounds": "a 4-bucket layout with other bounds than the federation's",
			}[what]
			if want == "" {
				want = "this federation's updates are bucket-coded"
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: unclear error %q", a.Name(), err)
			}
		}
		a.(RankingFormatter).RequireRankingFormat(FormatPacked, nil)
		if err := a.Begin(2, gm); err != nil {
			t.Fatal(err)
		}
		if err := a.Add(Update{Peer: "b", Payload: spec.EncodeFRLBucketUpdate(nil, voters[0], global, bounds, nil)}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: a bucket update in a packed federation: %v", a.Name(), err)
		}
	}
	got, err := spec.DecodeFRLUpdateAgainst(spec.EncodeFRLBucketUpdate(nil, voters[0], global, bounds, nil), nil, global, nil)
	if err != nil {
		t.Fatal(err)
	}
	for l := range layers {
		pos := make([]int, len(got[l]))
		for i, e := range got[l] {
			pos[e] = i
		}
		for i, e := range voters[0][l] {
			bucket := func(p int) int { return slices.IndexFunc(bounds[l][1:], func(b uint32) bool { return uint32(p) < b }) }
			if bucket(i) != bucket(pos[e]) {
				t.Fatalf("layer %d edge %d: bucket %d sent, %d decoded", l, e, bucket(i), bucket(pos[e]))
			}
		}
	}

	// Delta-coded updates are smaller here, and need the reference.
	p := spec.EncodeFRLUpdate(nil, voters[0])
	d := spec.EncodeFRLDeltaUpdate(nil, voters[0], global, nil)
	if len(d) >= len(p) {
		t.Errorf("delta-coded %d bytes, packed %d", len(d), len(p))
	}
	if _, err := spec.DecodeFRLUpdateAgainst(d, nil, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("a delta-coded update without its reference: %v", err)
	}
	if got, err := spec.DecodeFRLUpdateAgainst(d, nil, global, nil); err != nil || fmt.Sprint(got) != fmt.Sprint(voters[0]) {
		t.Errorf("round trip: %v", err)
	}
}

// randPerm is a random permutation of 0..n-1 drawn from rng.
func randPerm(rng *rand.Rand, n int) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)
	}
	rng.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}

package aggregate

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/rankvote"
)

// Fuzzers of what the aggregate package decodes from the network: global
// models (a trainer decodes the aggregator's ModelResponse) and update
// payloads as the aggregators' Add sees them (the aggregator folds a
// member's Update in). FuzzDecodeFRLUpdate and FuzzDecodeDenseUpdate are in
// aggregate_test.go. Run one with, e.g.,
//
//	go test -run x -fuzz FuzzAggregatorAdd -fuzztime 30s ./aggregate/

// netSpec is small enough that random bytes of the right length often
// decode: layers of 6 and 4 edges (3 and 2 bits per packed index).
var netSpec = Spec{Seed: 5, Sizes: []int{3, 2, 2}}

func netOrders(k int) [][]uint32 {
	orders := [][][]uint32{
		{{5, 0, 1, 2, 3, 4}, {3, 2, 1, 0}},
		{{0, 1, 2, 3, 4, 5}, {0, 1, 2, 3}},
		{{2, 4, 0, 5, 1, 3}, {1, 3, 0, 2}},
	}
	return orders[k%len(orders)]
}

func netWeights(k int) [][]float32 {
	f := float32(k)
	return [][]float32{{f, -f, 0.5, 1, f * f, -2}, {3, f, -0.25, 1e-3}}
}

// FuzzDecodeFRLModel: arbitrary bytes never panic the model decoder; errors
// wrap ErrMalformed; what decodes is a permutation per layer and re-encodes
// to the same bytes.
func FuzzDecodeFRLModel(f *testing.F) {
	for k := range 3 {
		f.Add(netSpec.EncodeFRLModel(netOrders(k)))
	}
	f.Add(Spec{Seed: 6, Sizes: netSpec.Sizes}.EncodeFRLModel(netOrders(0))) // another seed
	f.Add(netSpec.EncodeFRLUpdate(nil, netOrders(0)))                       // an update, not a model
	f.Add(netSpec.EncodeDenseModel(netWeights(1)))
	f.Add([]byte("FRLM"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := netSpec.DecodeFRLModel(b, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for l, n := range netSpec.Layers() {
			if err := rankvote.Validate(r[l], n); err != nil {
				t.Fatalf("decoded an invalid ranking: %v", err)
			}
		}
		if again := netSpec.EncodeFRLModel(r); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding gives %x, want %x", again, b)
		}
		// Decoding into a used buffer gives the same.
		r2, err := netSpec.DecodeFRLModel(b, [][]uint32{make([]uint32, 1), nil})
		if err != nil || !slices.EqualFunc(r, r2, slices.Equal) {
			t.Fatalf("decoding into a used buffer: %v, %v", r2, err)
		}
	})
}

// FuzzDecodeDenseModel: arbitrary bytes never panic; errors wrap
// ErrMalformed; decoded weights are finite and re-encode to the same bytes.
func FuzzDecodeDenseModel(f *testing.F) {
	for k := range 3 {
		f.Add(netSpec.EncodeDenseModel(netWeights(k)))
	}
	nan := netSpec.EncodeDenseModel(netWeights(1))
	copy(nan[len(nan)-4:], []byte{0, 0, 0xc0, 0x7f})
	f.Add(nan)
	f.Add(netSpec.EncodeDenseUpdate(nil, netWeights(1)))
	f.Add(netSpec.EncodeFRLModel(netOrders(0)))
	f.Add([]byte("DNSM"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := netSpec.DecodeDenseModel(b, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for l, n := range netSpec.Layers() {
			if len(w[l]) != n {
				t.Fatalf("layer %d: %d weights, want %d", l, len(w[l]), n)
			}
			for _, v := range w[l] {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("decoded non-finite weight %v", v)
				}
			}
		}
		if again := netSpec.EncodeDenseModel(w); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding gives %x, want %x", again, b)
		}
	})
}

// netAggregators returns one aggregator of every strategy for netSpec.
func netAggregators(t *testing.T) []Aggregator {
	t.Helper()
	var out []Aggregator
	for _, mk := range []func(Spec) (Aggregator, error){
		func(s Spec) (Aggregator, error) { return NewVote(s) },
		func(s Spec) (Aggregator, error) { return NewFilteredVote(s) },
		func(s Spec) (Aggregator, error) { return NewMedianVote(s) },
		func(s Spec) (Aggregator, error) { return NewTrimmedVote(s, 0.2) },
		func(s Spec) (Aggregator, error) { return NewClampedVote(s, 0) },
		func(s Spec) (Aggregator, error) { return NewFedAvg(s) },
		func(s Spec) (Aggregator, error) { return NewMedian(s) },
		func(s Spec) (Aggregator, error) { return NewTrimmedMean(s, 0.2) },
		func(s Spec) (Aggregator, error) { return NewMultiKrum(s, -1, 0) },
	} {
		a, err := mk(netSpec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func takesRankings(a Aggregator) bool { return strings.HasPrefix(a.Name(), "vote") }

// FuzzAggregatorAdd feeds a payload from the network to every aggregator
// in the middle of a round, as node.Machine does with a member's update:
// it never panics, it is accepted exactly when the strict decoder accepts
// it, and a refused payload (an error wrapping ErrMalformed) leaves the
// aggregate as it was: the round's result is the same as without it.
func FuzzAggregatorAdd(f *testing.F) {
	for k := range 3 {
		f.Add(netSpec.EncodeFRLUpdate(nil, netOrders(k)))
		f.Add(netSpec.EncodeDenseUpdate(nil, netWeights(k)))
	}
	dup := netOrders(2)
	dup[0] = slices.Clone(dup[0])
	dup[0][1] = dup[0][0] // not a permutation, but it packs
	f.Add(netSpec.EncodeFRLUpdate(nil, dup))
	nan := netSpec.EncodeDenseUpdate(nil, netWeights(1))
	copy(nan[len(nan)-4:], []byte{0, 0, 0x80, 0x7f}) // +Inf
	f.Add(nan)
	f.Add(netSpec.EncodeFRLModel(netOrders(0)))
	f.Add([]byte("FRLU\x02"))
	f.Add([]byte{})
	for k := range 3 { // delta- and bucket-coded against the round's global model, netOrders(0)
		f.Add(netSpec.EncodeFRLDeltaUpdate(nil, netOrders(k), netOrders(0), nil))
		f.Add(netSpec.EncodeFRLBucketUpdate(nil, netOrders(k), netOrders(0), [][]uint32{{0, 2, 4, 6}, {0, 2, 4}}, nil))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, a := range netAggregators(t) {
			rank := takesRankings(a)
			global, update := netSpec.EncodeDenseModel(netWeights(0)), func(k int) []byte { return netSpec.EncodeDenseUpdate(nil, netWeights(k)) }
			strict := func(b []byte) error { _, err := netSpec.DecodeDenseUpdate(b, nil); return err }
			if rank {
				global, update = netSpec.EncodeFRLModel(netOrders(0)), func(k int) []byte { return netSpec.EncodeFRLUpdate(nil, netOrders(k)) }
				strict = func(b []byte) error { _, err := netSpec.DecodeFRLUpdateAgainst(b, nil, netOrders(0), nil); return err }
			}
			// The round without the fuzzed payload, then with it.
			want := netRound(t, a, global, update)
			if err := a.Begin(1, global); err != nil {
				t.Fatal(err)
			}
			for k := range 2 {
				if err := a.Add(Update{Peer: "honest", Samples: int64(1 + k), Payload: update(k)}); err != nil {
					t.Fatalf("%s: %v", a.Name(), err)
				}
			}
			err := a.Add(Update{Peer: "mallory", Samples: 3, Payload: payload})
			if serr := strict(payload); (err == nil) != (serr == nil) {
				t.Fatalf("%s: Add says %v, the strict decoder %v", a.Name(), err, serr)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "mallory") {
					t.Fatalf("%s: error %v: want ErrMalformed naming the sender", a.Name(), err)
				}
				if a.Len() != 2 {
					t.Fatalf("%s: Len %d after a refused update, want 2", a.Name(), a.Len())
				}
			} else if a.Len() != 3 {
				t.Fatalf("%s: Len %d after an accepted update, want 3", a.Name(), a.Len())
			}
			if err := a.Add(Update{Peer: "honest", Samples: 3, Payload: update(2)}); err != nil {
				t.Fatalf("%s: an honest update after the fuzzed one: %v", a.Name(), err)
			}
			got, ferr := a.Finalize()
			if ferr != nil {
				t.Fatalf("%s: Finalize: %v", a.Name(), ferr)
			}
			if err != nil && !bytes.Equal(got, want) {
				t.Fatalf("%s: a refused update changed the result", a.Name())
			}
			// The new model is a valid model of the spec.
			if rank {
				_, err = netSpec.DecodeFRLModel(got, nil)
			} else {
				_, err = netSpec.DecodeDenseModel(got, nil)
			}
			if err != nil {
				t.Fatalf("%s: the new model does not decode: %v", a.Name(), err)
			}
		}
	})
}

// netRound runs a round of the three honest updates and returns the new
// model.
func netRound(t *testing.T, a Aggregator, global []byte, update func(int) []byte) []byte {
	t.Helper()
	if err := a.Begin(1, global); err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		if err := a.Add(Update{Peer: "honest", Samples: int64(1 + k), Payload: update(k)}); err != nil {
			t.Fatalf("%s: %v", a.Name(), err)
		}
	}
	m, err := a.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

package lowrank

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
)

// Fuzzers of the payloads the low-rank merges take from the network: a
// member's update as Add sees it, in the middle of a round
// (FuzzDecodeUpdate and FuzzDecodeModel, in lowrank_test.go, fuzz the
// decoders alone). Run one with, e.g.,
//
//	go test -run x -fuzz FuzzMergeAdd -fuzztime 30s ./lowrank/

// netSpec is a small two-layer adapter, so that random bytes of the right
// length are found: 4×3 at rank 2 and 3×2 at rank 1.
func netSpec(frozen bool) Spec {
	s := Spec{Seed: 11, FrozenA: frozen, Layers: []Layer{{In: 4, Out: 3, Rank: 2, Alpha: 4}, {In: 3, Out: 2, Rank: 1, Alpha: 2}}}
	s.Base[0] = 0x5a
	return s
}

// netFactors returns deterministic factors of s at full rank, scaled by k.
func netFactors(s Spec, k float32) Factors {
	f := Factors{B: make([][]float32, len(s.Layers))}
	if !s.FrozenA {
		f.A = make([][]float32, len(s.Layers))
	}
	for l, ly := range s.Layers {
		if f.A != nil {
			f.A[l] = make([]float32, ly.Rank*ly.In)
			for i := range f.A[l] {
				f.A[l][i] = k * float32((i*7+l*3)%11-5) / 8
			}
		}
		f.B[l] = make([]float32, ly.Rank*ly.Out)
		for i := range f.B[l] {
			f.B[l][i] = k * float32((i*5+l)%9-4) / 16
		}
	}
	return f
}

type netMerge struct {
	frozen bool
	make   func(Spec) (aggregate.Aggregator, error)
}

var netMerges = []netMerge{
	{false, func(s Spec) (aggregate.Aggregator, error) { return NewAvg(s) }},
	{true, func(s Spec) (aggregate.Aggregator, error) { return NewFFA(s) }},
	{false, func(s Spec) (aggregate.Aggregator, error) { return NewSVD(s, SVDOptions{}) }},
}

// FuzzMergeAdd feeds a payload from the network to each merge, between
// honest updates, as node.Machine does with a member's update: it never
// panics; it is accepted exactly when DecodeUpdate accepts it against the
// round's model; a refused payload (an error wrapping ErrMalformed and
// naming the sender) leaves the merge as it was, so the round's model is
// the same as without it; and an accepted one still gives a valid model
// (a member must not be able to make the round fail).
func FuzzMergeAdd(f *testing.F) {
	for _, frozen := range []bool{false, true} {
		s := netSpec(frozen)
		g := netFactors(s, 1)
		for _, c := range []Codec{FP32, FP16, Int8} {
			f.Add(frozen, must(s.EncodeUpdate(nil, c, g, netFactors(s, 1.5))))
			f.Add(frozen, must(s.EncodeUpdate(nil, c, g.Prefix(s, []int{1, 0}), netFactors(s, 2).Prefix(s, []int{1, 0}))))
		}
		big := netFactors(s, 1)
		for l := range big.B {
			for i := range big.B[l] {
				big.B[l][i] = 3e38
			}
			if big.A != nil {
				for i := range big.A[l] {
					big.A[l][i] = -3e38
				}
			}
		}
		f.Add(frozen, must(s.EncodeUpdate(nil, FP32, g, big)))
		f.Add(frozen, must(s.EncodeModel(g, FP32)))
	}
	f.Add(false, []byte("LRAU\x01\x00\x02"))
	f.Fuzz(func(t *testing.T, frozen bool, payload []byte) {
		s := netSpec(frozen)
		gf := netFactors(s, 1)
		global := must(s.EncodeModel(gf, FP32))
		honest := func(k int) []byte { return must(s.EncodeUpdate(nil, FP16, gf, netFactors(s, 1+float32(k)/4))) }
		for _, nm := range netMerges {
			if nm.frozen != frozen {
				continue
			}
			a, err := nm.make(s)
			if err != nil {
				t.Fatal(err)
			}
			want := netMergeRound(t, a, global, honest, nil)
			refused := false
			got := netMergeRound(t, a, global, honest, func() {
				err := a.Add(aggregate.Update{Peer: "mallory", Samples: 2, Payload: payload})
				if _, derr := s.DecodeUpdate(payload, gf); (err == nil) != (derr == nil) {
					t.Fatalf("%s: Add says %v, DecodeUpdate %v", a.Name(), err, derr)
				}
				switch {
				case err == nil && a.Len() != 3:
					t.Fatalf("%s: Len %d after an accepted update, want 3", a.Name(), a.Len())
				case err == nil:
				case !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "mallory"):
					t.Fatalf("%s: error %v: want ErrMalformed naming the sender", a.Name(), err)
				case a.Len() != 2:
					t.Fatalf("%s: Len %d after a refused update, want 2", a.Name(), a.Len())
				}
				refused = err != nil
			})
			if refused && !bytes.Equal(got, want) {
				t.Fatalf("%s: a refused update changed the round's model", a.Name())
			}
			if _, err := s.DecodeModel(got); err != nil {
				t.Fatalf("%s: the new model does not decode: %v", a.Name(), err)
			}
		}
	})
}

// netMergeRound runs a round: Begin, two honest updates, mid (if not nil),
// a third honest update, Finalize, which must succeed.
func netMergeRound(t *testing.T, a aggregate.Aggregator, global []byte, honest func(int) []byte, mid func()) []byte {
	t.Helper()
	if err := a.Begin(1, global); err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		if k == 2 && mid != nil {
			mid()
		}
		if err := a.Add(aggregate.Update{Peer: "honest", Samples: int64(1 + k), Payload: honest(k)}); err != nil {
			t.Fatalf("%s: honest update %d: %v", a.Name(), k, err)
		}
	}
	m, err := a.Finalize()
	if err != nil {
		t.Fatalf("%s: Finalize: %v", a.Name(), err)
	}
	return m
}

// TestMergeAddHugeUpdate: an update of the largest finite values decodes,
// and the round still produces a model.
func TestMergeAddHugeUpdate(t *testing.T) {
	for _, nm := range netMerges {
		s := netSpec(nm.frozen)
		gf := netFactors(s, 1)
		big := netFactors(s, 1)
		for l := range big.B {
			for i := range big.B[l] {
				big.B[l][i] = math.MaxFloat32 / 2
			}
			if big.A != nil {
				for i := range big.A[l] {
					big.A[l][i] = -math.MaxFloat32 / 2
				}
			}
		}
		a, err := nm.make(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Begin(1, must(s.EncodeModel(gf, FP32))); err != nil {
			t.Fatal(err)
		}
		if err := a.Add(aggregate.Update{Peer: "big", Samples: 1, Payload: must(s.EncodeUpdate(nil, FP32, gf, big))}); err != nil {
			t.Logf("%s: refused: %v", a.Name(), err)
			continue
		}
		if _, err := a.Finalize(); err != nil {
			t.Errorf("%s: one accepted update of huge values fails the round: %v", a.Name(), err)
		}
	}
}

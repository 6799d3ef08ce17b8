package aggregate

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/rankvote"
)

var tiny = Spec{Seed: 9, Sizes: []int{2, 2, 1}} // layers of 4 and 2 edges

func frlUpdate(t *testing.T, s Spec, order ...[]uint32) Update {
	t.Helper()
	return Update{Peer: "p", Samples: 1, Payload: s.EncodeFRLUpdate(nil, order)}
}

func TestVoteHandComputed(t *testing.T) {
	v, err := NewVote(tiny)
	if err != nil {
		t.Fatal(err)
	}
	global := tiny.EncodeFRLModel([][]uint32{{0, 1, 2, 3}, {0, 1}})
	if err := v.Begin(1, global); err != nil {
		t.Fatal(err)
	}
	// Layer 0 positions per voter (edge: position):
	//   A = [3 1 0 2] -> 3:0 1:1 0:2 2:3
	//   B = [1 3 2 0] -> 1:0 3:1 2:2 0:3
	//   C = [0 1 3 2] -> 0:0 1:1 3:2 2:3
	// sums: 0:5 1:2 2:8 3:3 -> order 1,3,0,2
	// Layer 1: [1 0],[0 1],[1 0] -> sums 0:2 1:1 -> order 1,0
	for _, u := range []Update{
		frlUpdate(t, tiny, []uint32{3, 1, 0, 2}, []uint32{1, 0}),
		frlUpdate(t, tiny, []uint32{1, 3, 2, 0}, []uint32{0, 1}),
		frlUpdate(t, tiny, []uint32{0, 1, 3, 2}, []uint32{1, 0}),
	} {
		if err := v.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	if v.Len() != 3 {
		t.Fatalf("Len %d, want 3", v.Len())
	}
	m, err := v.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	got, err := tiny.DecodeFRLModel(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got[0], []uint32{1, 3, 0, 2}) || !slices.Equal(got[1], []uint32{1, 0}) {
		t.Fatalf("vote result %v, want [[1 3 0 2] [1 0]]", got)
	}
}

func TestVoteTiesSingleAndIdentical(t *testing.T) {
	v, _ := NewVote(tiny)
	global := tiny.EncodeFRLModel([][]uint32{{0, 1, 2, 3}, {0, 1}})
	// Two voters in exact opposition: every sum is 3, ties broken by edge index.
	_ = v.Begin(1, global)
	_ = v.Add(frlUpdate(t, tiny, []uint32{2, 0, 3, 1}, []uint32{0, 1}))
	_ = v.Add(frlUpdate(t, tiny, []uint32{1, 3, 0, 2}, []uint32{1, 0}))
	m, _ := v.Finalize()
	got, _ := tiny.DecodeFRLModel(m, nil)
	if !slices.Equal(got[0], []uint32{0, 1, 2, 3}) || !slices.Equal(got[1], []uint32{0, 1}) {
		t.Fatalf("tied vote %v, want index order", got)
	}
	// A single voter, and any number of identical voters, return that ranking.
	for voters := 1; voters <= 4; voters++ {
		_ = v.Begin(2, global)
		for range voters {
			if err := v.Add(frlUpdate(t, tiny, []uint32{3, 0, 2, 1}, []uint32{1, 0})); err != nil {
				t.Fatal(err)
			}
		}
		m, _ := v.Finalize()
		got, _ := tiny.DecodeFRLModel(m, nil)
		if !slices.Equal(got[0], []uint32{3, 0, 2, 1}) {
			t.Fatalf("%d identical voters gave %v", voters, got[0])
		}
	}
	_ = v.Begin(3, global)
	if _, err := v.Finalize(); !errors.Is(err, ErrNoUpdates) {
		t.Fatalf("empty round: %v, want ErrNoUpdates", err)
	}
}

func TestVoteRejectsBadUpdates(t *testing.T) {
	v, _ := NewVote(tiny)
	global := tiny.EncodeFRLModel([][]uint32{{0, 1, 2, 3}, {0, 1}})
	_ = v.Begin(1, global)
	good := frlUpdate(t, tiny, []uint32{3, 1, 0, 2}, []uint32{1, 0})
	if err := v.Add(good); err != nil {
		t.Fatal(err)
	}
	other := Spec{Seed: 9, Sizes: []int{2, 3, 1}}
	dup := frlUpdate(t, tiny, []uint32{0, 1, 2, 3}, []uint32{0, 1})
	// Pack a duplicate index into layer 0: [1 1 2 3].
	dupPayload := tiny.EncodeFRLUpdate(nil, [][]uint32{{1, 1, 2, 3}, {0, 1}})
	cases := map[string]struct {
		payload []byte
		want    string
	}{
		"empty":         {nil, "shorter than its"},
		"wrong magic":   {append([]byte("DNSU"), good.Payload[4:]...), "magic"},
		"wrong shape":   {frlUpdate(t, other, []uint32{0, 1, 2, 3, 4, 5}, []uint32{0, 1, 2}).Payload, "layer 0 has 6 entries, want 4"},
		"truncated":     {good.Payload[:len(good.Payload)-1], "bytes, want"},
		"trailing byte": {append(slices.Clone(dup.Payload), 0), "bytes, want"},
		"duplicate":     {dupPayload, "repeat"},
	}
	for name, c := range cases {
		err := v.Add(Update{Peer: "bad", Samples: 1, Payload: c.payload})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v does not wrap ErrMalformed", name, err)
		}
	}
	if v.Len() != 1 {
		t.Fatalf("rejected updates changed the vote: %d voters", v.Len())
	}
	m, _ := v.Finalize()
	got, _ := tiny.DecodeFRLModel(m, nil)
	if !slices.Equal(got[0], []uint32{3, 1, 0, 2}) {
		t.Fatalf("after rejections the single good voter's ranking %v was lost: %v", []uint32{3, 1, 0, 2}, got[0])
	}
	if err := v.Begin(2, []byte("nonsense")); err == nil {
		t.Fatal("Begin accepted a malformed global model")
	}
}

func TestFedAvgWeighted(t *testing.T) {
	f, err := NewFedAvg(tiny)
	if err != nil {
		t.Fatal(err)
	}
	global := tiny.EncodeDenseModel([][]float32{{0, 0, 0, 0}, {0, 0}})
	if err := f.Begin(1, global); err != nil {
		t.Fatal(err)
	}
	add := func(samples int64, w ...[]float32) error {
		return f.Add(Update{Peer: "p", Samples: samples, Payload: tiny.EncodeDenseUpdate(nil, w)})
	}
	if err := add(1, []float32{1, 2, 3, 4}, []float32{1, 1}); err != nil {
		t.Fatal(err)
	}
	if err := add(3, []float32{5, 6, 7, 8}, []float32{-1, 3}); err != nil {
		t.Fatal(err)
	}
	if err := add(0, []float32{9, 9, 9, 9}, []float32{9, 9}); err == nil {
		t.Fatal("zero sample count accepted")
	}
	nan := float32(math.NaN())
	if err := add(1, []float32{nan, 0, 0, 0}, []float32{0, 0}); err == nil || !errors.Is(err, ErrMalformed) {
		t.Fatalf("NaN weight: %v", err)
	}
	m, err := f.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	got, err := tiny.DecodeDenseModel(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float32{{4, 5, 6, 7}, {-0.5, 2.5}}
	for l := range want {
		if !slices.Equal(got[l], want[l]) {
			t.Fatalf("layer %d: %v, want %v", l, got[l], want[l])
		}
	}
}

func TestModelCodecRoundTrip(t *testing.T) {
	order := [][]uint32{{2, 0, 3, 1}, {1, 0}}
	m := tiny.EncodeFRLModel(order)
	got, err := tiny.DecodeFRLModel(m, nil)
	if err != nil || !slices.Equal(got[0], order[0]) || !slices.Equal(got[1], order[1]) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	otherSeed := Spec{Seed: 10, Sizes: tiny.Sizes}
	if _, err := otherSeed.DecodeFRLModel(m, nil); err == nil || !strings.Contains(err.Error(), "seed") {
		t.Fatalf("model of another network accepted: %v", err)
	}
	if want := 13 + 16 + rankvote.PackedSize(4) + rankvote.PackedSize(2); len(m) != want {
		t.Fatalf("model is %d bytes, want %d", len(m), want)
	}
	if len(tiny.EncodeFRLUpdate(nil, order)) != tiny.FRLUpdateSize() {
		t.Fatal("FRLUpdateSize disagrees with the encoder")
	}
}

// TestShapesSpec: a spec of per-layer shapes (a convolutional network's
// kernel tensors) encodes, decodes and votes like a chain of sizes; its
// header states each layer's shape, so a model of the chain with the same
// edge counts is refused, and a chain spec's bytes are unchanged.
func TestShapesSpec(t *testing.T) {
	conv := Spec{Seed: 4, Shapes: [][2]int{{2, 3}, {6, 1}}}
	chain := Spec{Seed: 4, Sizes: []int{2, 3, 1}} // layers of 6 and 3 edges
	if err := conv.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := conv.Layers(); !slices.Equal(got, []int{6, 6}) {
		t.Fatalf("layers %v", got)
	}
	order := [][]uint32{{5, 4, 3, 2, 1, 0}, {0, 2, 4, 1, 3, 5}}
	m := conv.EncodeFRLModel(order)
	got, err := conv.DecodeFRLModel(m, nil)
	if err != nil || !slices.Equal(got[0], order[0]) || !slices.Equal(got[1], order[1]) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	same := Spec{Seed: 4, Shapes: [][2]int{{3, 2}, {6, 1}}} // same edge counts, another shape
	if _, err := same.DecodeFRLModel(m, nil); err == nil || !strings.Contains(err.Error(), "layer 0 is 2x3") {
		t.Fatalf("model of another shape accepted: %v", err)
	}
	if _, err := chain.DecodeFRLModel(m, nil); err == nil {
		t.Fatal("a chain spec decoded a model of another network")
	}
	v, err := NewVote(conv)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := v.Add(Update{Payload: conv.EncodeFRLUpdate(nil, order)}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := v.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := conv.DecodeFRLModel(out, nil); err != nil || !slices.Equal(got[1], order[1]) {
		t.Fatalf("vote of identical rankings: %v %v", got, err)
	}
	w := [][]float32{{1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1}}
	if back, err := conv.DecodeDenseModel(conv.EncodeDenseModel(w), nil); err != nil || !slices.Equal(back[1], w[1]) {
		t.Fatalf("dense round trip: %v %v", back, err)
	}
	if bad := (Spec{Seed: 1, Shapes: [][2]int{{0, 3}}}); bad.Validate() == nil {
		t.Fatal("a layer of zero inputs validated")
	}
	// The chain's header is the one it always had: seed, L, (in, out) per layer.
	if h := chain.EncodeFRLModel([][]uint32{{0, 1, 2, 3, 4, 5}, {0, 1, 2}})[12 : 13+16]; !slices.Equal(h, []byte{2, 2, 0, 0, 0, 3, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0}) {
		t.Fatalf("chain header %v", h)
	}
}

// FuzzDecodeFRLUpdate: arbitrary bytes never panic the decoder; whatever
// decodes is a valid ranking set that re-encodes to the same bytes.
func FuzzDecodeFRLUpdate(f *testing.F) {
	s := Spec{Seed: 1, Sizes: []int{5, 3, 2}}
	f.Add(s.EncodeFRLUpdate(nil, [][]uint32{{14, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, {5, 4, 3, 2, 1, 0}}))
	f.Add([]byte("FRLU"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := s.DecodeFRLUpdate(b, nil)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for l, n := range s.Layers() {
			if err := rankvote.Validate(r[l], n); err != nil {
				t.Fatalf("decoded an invalid ranking: %v", err)
			}
		}
		if again := s.EncodeFRLUpdate(nil, r); !slices.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzDecodeDenseUpdate: arbitrary bytes never panic; decoded weights are finite.
func FuzzDecodeDenseUpdate(f *testing.F) {
	s := Spec{Seed: 1, Sizes: []int{2, 2, 1}}
	f.Add(s.EncodeDenseUpdate(nil, [][]float32{{1, 2, 3, 4}, {5, 6}}))
	f.Add([]byte("DNSU\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := s.DecodeDenseUpdate(b, nil)
		if err != nil {
			return
		}
		for _, layer := range w {
			for _, v := range layer {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("decoded non-finite weight %v", v)
				}
			}
		}
		if again := s.EncodeDenseUpdate(nil, w); !slices.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

package lowrank

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
)

func testSpec(frozen bool, ranks ...int) Spec {
	s := Spec{Seed: 7, FrozenA: frozen, Layers: []Layer{{In: 40, Out: 33, Rank: ranks[0], Alpha: 8}, {In: 33, Out: 5, Rank: ranks[1], Alpha: 4}}}
	s.Base[0], s.Base[31] = 0xab, 0xcd
	return s
}

// randFactors draws factors of the given ranks (A nil for a frozen spec).
func randFactors(s Spec, ranks []int, rng *rand.Rand, scale float64) Factors {
	f := Factors{B: make([][]float32, len(s.Layers))}
	if !s.FrozenA {
		f.A = make([][]float32, len(s.Layers))
	}
	for l, ly := range s.Layers {
		r := ranks[l]
		if f.A != nil {
			f.A[l] = make([]float32, r*ly.In)
			for i := range f.A[l] {
				f.A[l][i] = float32(rng.NormFloat64() * scale)
			}
		}
		f.B[l] = make([]float32, r*ly.Out)
		for i := range f.B[l] {
			f.B[l][i] = float32(rng.NormFloat64() * scale)
		}
	}
	return f
}

func specRanks(s Spec) []int {
	r := make([]int, len(s.Layers))
	for l, ly := range s.Layers {
		r[l] = ly.Rank
	}
	return r
}

// product returns Σ_j A_jᵀB_j (In×Out) of one layer, in float64; a is the
// shared A when f has none.
func product(in, out int, A, B []float32) []float64 {
	m := make([]float64, in*out)
	r := len(B) / out
	for j := range r {
		for i := range in {
			a := float64(A[j*in+i])
			for o := range out {
				m[i*out+o] += a * float64(B[j*out+o])
			}
		}
	}
	return m
}

func maxDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// run merges updates (factors, samples) from a global model and returns the
// decoded result.
func run(t *testing.T, agg aggregate.Aggregator, s Spec, global Factors, peers []Factors, samples []int64, c Codec) Factors {
	t.Helper()
	g, err := s.EncodeModel(global, FP32)
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.Begin(1, g); err != nil {
		t.Fatal(err)
	}
	for k, f := range peers {
		start := global.Prefix(s, ranksOf(s, f))
		u, err := s.EncodeUpdate(nil, c, start, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := agg.Add(aggregate.Update{Peer: fmt.Sprint(k), Samples: samples[k], Payload: u}); err != nil {
			t.Fatal(err)
		}
	}
	if agg.Len() != len(peers) {
		t.Fatalf("Len %d, want %d", agg.Len(), len(peers))
	}
	out, err := agg.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.DecodeModel(out)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ranksOf(s Spec, f Factors) []int {
	r := make([]int, len(s.Layers))
	for l, ly := range s.Layers {
		r[l] = len(f.B[l]) / ly.Out
	}
	return r
}

// weightedSum is Σ_k p_k A_kᵀB_k / Σ p_k of layer l.
func weightedSum(s Spec, l int, peers []Factors, samples []int64, sharedA []float32) []float64 {
	ly := s.Layers[l]
	m := make([]float64, ly.In*ly.Out)
	var w float64
	for k, f := range peers {
		a := sharedA
		if f.A != nil {
			a = f.A[l]
		}
		p := product(ly.In, ly.Out, a, f.B[l])
		for i := range m {
			m[i] += float64(samples[k]) * p[i]
		}
		w += float64(samples[k])
	}
	for i := range m {
		m[i] /= w
	}
	return m
}

// TestMergeSVDExact checks that every method reproduces Σ p_k A_kᵀB_k to
// 1e-9 when the rank budget covers the sum's rank, with peers of different
// ranks, and that the factors come out by descending singular value with no
// residual.
func TestMergeSVDExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	in, out := 60, 45
	ranks := []int{3, 1, 4, 2} // Σr = 10
	var terms []Term
	want := make([]float64, in*out)
	var w float64
	for k, r := range ranks {
		tm := Term{P: float64(10 + 7*k), A: make([]float64, r*in), B: make([]float64, r*out)}
		for i := range tm.A {
			tm.A[i] = rng.NormFloat64()
		}
		for i := range tm.B {
			tm.B[i] = rng.NormFloat64()
		}
		terms = append(terms, tm)
		w += tm.P
		for j := range r {
			for i := range in {
				for o := range out {
					want[i*out+o] += tm.P * tm.A[j*in+i] * tm.B[j*out+o]
				}
			}
		}
	}
	for i := range want {
		want[i] /= w
	}
	for _, m := range []Method{Auto, Factored, Dense, Randomized} {
		for _, R := range []int{10, 12} {
			A, B, dead, res, used, err := MergeSVD(in, out, R, terms, SVDOptions{Method: m})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float64, in*out)
			for j := range R {
				for i := range in {
					for o := range out {
						got[i*out+o] += A[j*in+i] * B[j*out+o]
					}
				}
			}
			if d := maxDiff(got, want); d > 1e-9 {
				t.Errorf("%v (used %v) R=%d: max error %g", m, used, R, d)
			}
			if res.Fraction() > 1e-12 {
				t.Errorf("%v R=%d: residual %v with a sufficient rank", m, R, res)
			}
			if R == 12 && (!dead[10] || !dead[11] || dead[9]) {
				t.Errorf("%v: dead components %v, want exactly 10 and 11", m, dead)
			}
			if m == Auto && used != Factored {
				t.Errorf("auto used %v for Σr=10 on 60×45, want factored", used)
			}
			// descending singular values: ‖A_j‖·‖B_j‖ = σ_j
			prev := math.Inf(1)
			for j := range 10 {
				s := norm(A[j*in:(j+1)*in]) * norm(B[j*out:(j+1)*out])
				if s > prev*(1+1e-12) {
					t.Fatalf("%v: component %d has σ %v after %v", m, j, s, prev)
				}
				prev = s
			}
		}
	}
}

func norm(x []float64) float64 {
	s := 0.0
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

// TestMergeSVDTruncation checks the Eckart–Young residual: truncating to R
// drops exactly Σ_{j>R} σ_j², and a prefix of the rank-R result is the
// rank-r' truncation.
func TestMergeSVDTruncation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	in, out := 50, 30
	var terms []Term
	for k := range 6 {
		tm := Term{P: float64(k + 1), A: make([]float64, 4*in), B: make([]float64, 4*out)}
		for i := range tm.A {
			tm.A[i] = rng.NormFloat64()
		}
		for i := range tm.B {
			tm.B[i] = rng.NormFloat64()
		}
		terms = append(terms, tm)
	}
	// Σr = 24 ≤ 30: factored is exact; the full spectrum has 24 values.
	Afull, Bfull, _, full, _, err := MergeSVD(in, out, 24, terms, SVDOptions{Method: Factored})
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]float64, 24)
	for j := range sig {
		sig[j] = norm(Afull[j*in:(j+1)*in]) * norm(Bfull[j*out:(j+1)*out])
	}
	for _, m := range []Method{Factored, Dense, Randomized} {
		A, B, _, res, _, err := MergeSVD(in, out, 5, terms, SVDOptions{Method: m, PowerIters: 4})
		if err != nil {
			t.Fatal(err)
		}
		drop := 0.0
		for _, s := range sig[5:] {
			drop += s * s
		}
		if math.Abs(res.Dropped-drop) > 1e-8*full.Total || math.Abs(res.Total-full.Total) > 1e-9*full.Total {
			t.Errorf("%v: residual %+v, want dropped %v of %v", m, res, drop, full.Total)
		}
		for j := range 5 {
			s := norm(A[j*in:(j+1)*in]) * norm(B[j*out:(j+1)*out])
			tol := 1e-9
			if m == Randomized {
				tol = 1e-3 // power iterations converge on the top values, not exactly
			}
			if math.Abs(s-sig[j]) > tol*sig[0] {
				t.Errorf("%v: σ_%d = %v, want %v", m, j, s, sig[j])
			}
		}
	}
	// Factored is refused when Σr exceeds a side.
	if _, _, _, _, _, err := MergeSVD(20, 10, 5, terms[:1], SVDOptions{Method: Factored}); err == nil {
		t.Fatal("factored merge of mismatched terms accepted")
	}
}

// TestSVDAggregatorExact runs lora-svd over encoded fp32 updates of
// heterogeneous ranks: with a rank budget that covers Σr_k the merged model
// is Σ p_k A_kᵀB_k to float32 precision; then the rank-2 prefix a small peer
// takes is the best rank-2 approximation.
func TestSVDAggregatorExact(t *testing.T) {
	s := testSpec(false, 12, 5)
	rng := rand.New(rand.NewPCG(5, 6))
	global := randFactors(s, specRanks(s), rng, 0.3)
	peers := []Factors{
		randFactors(s, []int{4, 2}, rng, 0.3),
		randFactors(s, []int{2, 1}, rng, 0.3),
		randFactors(s, []int{4, 2}, rng, 0.3),
	}
	samples := []int64{30, 10, 60}
	agg, err := NewSVD(s, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := run(t, agg, s, global, peers, samples, FP32)
	for l, ly := range s.Layers {
		want := weightedSum(s, l, peers, samples, nil)
		got := product(ly.In, ly.Out, f.A[l], f.B[l])
		if d := maxDiff(got, want); d > 1e-5 {
			t.Fatalf("layer %d: merged product off by %g", l, d)
		}
		if r := agg.Residuals()[l]; r.Fraction() > 1e-12 {
			t.Fatalf("layer %d: residual %v", l, r)
		}
	}
	if m := agg.RoundMetrics(); len(m) != 3 || m["svd_dropped"] > 1e-12 {
		t.Fatalf("round metrics %v", m)
	}
	// A rank budget below Σr drops energy and reports it.
	small := testSpec(false, 3, 2)
	aggSmall, _ := NewSVD(small, SVDOptions{})
	gs := global.Prefix(small, specRanks(small))
	ps := []Factors{peers[0].Prefix(small, []int{3, 2}), peers[2].Prefix(small, []int{3, 2})}
	run(t, aggSmall, small, gs, ps, samples[:2], FP32)
	if fr := aggSmall.DroppedFraction(); !(fr > 0.01 && fr < 1) {
		t.Fatalf("rank 3 of Σr = 6: dropped fraction %v", fr)
	}
}

// TestFFAExact: with A frozen and shared, averaging B reproduces
// Σ p_k AᵀB_k exactly, also for peers of smaller ranks (their missing
// components count as zero).
func TestFFAExact(t *testing.T) {
	s := testSpec(true, 4, 3)
	rng := rand.New(rand.NewPCG(7, 8))
	sharedA := randFactors(testSpec(false, 4, 3), []int{4, 3}, rng, 0.5).A
	global := randFactors(s, specRanks(s), rng, 0.2)
	peers := []Factors{randFactors(s, []int{4, 3}, rng, 0.2), randFactors(s, []int{2, 3}, rng, 0.2), randFactors(s, []int{4, 1}, rng, 0.2)}
	samples := []int64{5, 9, 13}
	agg, err := NewFFA(s)
	if err != nil {
		t.Fatal(err)
	}
	f := run(t, agg, s, global, peers, samples, FP32)
	for l, ly := range s.Layers {
		want := weightedSum(s, l, peers, samples, sharedA[l])
		got := product(ly.In, ly.Out, sharedA[l], f.B[l])
		if d := maxDiff(got, want); d > 1e-5 {
			t.Fatalf("layer %d: FFA merge off by %g", l, d)
		}
	}
	if agg.Name() != NameFFA {
		t.Fatal(agg.Name())
	}
	if _, err := NewFFA(testSpec(false, 4, 3)); err == nil {
		t.Fatal("lora-ffa accepted a spec whose A travels")
	}
}

// TestAvgCrossTerms: lora-avg returns the averaged factors, and its product
// misses the exact merge by exactly Σ_k p_k (A_k − Ā)ᵀ(B_k − B̄).
func TestAvgCrossTerms(t *testing.T) {
	s := testSpec(false, 4, 3)
	rng := rand.New(rand.NewPCG(9, 10))
	global := randFactors(s, specRanks(s), rng, 0.3)
	var peers []Factors
	for range 4 {
		peers = append(peers, randFactors(s, specRanks(s), rng, 0.3))
	}
	samples := []int64{1, 2, 3, 4}
	agg, err := NewAvg(s)
	if err != nil {
		t.Fatal(err)
	}
	f := run(t, agg, s, global, peers, samples, FP32)
	for l, ly := range s.Layers {
		exact := weightedSum(s, l, peers, samples, nil)
		got := product(ly.In, ly.Out, f.A[l], f.B[l])
		cross := make([]float64, ly.In*ly.Out)
		for k, p := range peers {
			dA, dB := make([]float32, len(p.A[l])), make([]float32, len(p.B[l]))
			for i := range dA {
				dA[i] = p.A[l][i] - f.A[l][i]
			}
			for i := range dB {
				dB[i] = p.B[l][i] - f.B[l][i]
			}
			c := product(ly.In, ly.Out, dA, dB)
			for i := range cross {
				cross[i] += float64(samples[k]) / 10 * c[i]
			}
		}
		diff := make([]float64, len(exact))
		for i := range diff {
			diff[i] = exact[i] - got[i]
		}
		if d := maxDiff(diff, cross); d > 1e-5 {
			t.Fatalf("layer %d: exact − avg differs from the cross terms by %g", l, d)
		}
		if maxDiff(exact, got) < 1e-3 {
			t.Fatalf("layer %d: lora-avg matched the exact merge; the test has no cross terms", l)
		}
	}
}

// TestQuantizationBounds checks each codec's round-trip error bound, on
// values that include zeros, subnormal-range and large magnitudes.
func TestQuantizationBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	rows, cols := 7, 53
	v := make([]float32, rows*cols)
	for i := range v {
		e := rng.IntN(30) - 25
		v[i] = float32(rng.NormFloat64() * math.Pow(2, float64(e)))
	}
	clear(v[2*cols : 3*cols]) // an all-zero row
	v[4*cols] = 60000
	for _, c := range []Codec{FP32, FP16, Int8} {
		b, err := c.appendBlock(nil, v, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != c.BlockSize(rows, cols) {
			t.Fatalf("%v: %d bytes, want %d", c, len(b), c.BlockSize(rows, cols))
		}
		got := make([]float32, len(v))
		rest, err := c.decodeBlock(b, got, rows, cols, "test")
		if err != nil || len(rest) != 0 {
			t.Fatalf("%v: %v, %d bytes left", c, err, len(rest))
		}
		for r := range rows {
			var m float64
			for _, x := range v[r*cols : (r+1)*cols] {
				m = max(m, math.Abs(float64(x)))
			}
			for k := r * cols; k < (r+1)*cols; k++ {
				x, y := float64(v[k]), float64(got[k])
				var bound float64
				switch c {
				case FP32:
					bound = 0
				case FP16:
					bound = math.Max(math.Abs(x)*math.Pow(2, -11), math.Pow(2, -25))
				case Int8:
					bound = m/254*(1+1e-6) + 1e-45
				}
				if math.Abs(x-y) > bound {
					t.Fatalf("%v: row %d value %v came back %v (error %g > bound %g)", c, r, x, y, math.Abs(x-y), bound)
				}
			}
		}
	}
	if _, err := FP16.appendBlock(nil, []float32{70000}, 1, 1); err == nil {
		t.Fatal("fp16 encoded 70000")
	}
	if _, err := Int8.appendBlock(nil, []float32{float32(math.NaN())}, 1, 1); err == nil {
		t.Fatal("NaN encoded")
	}
}

func TestF16Exhaustive(t *testing.T) {
	for h := range 1 << 16 {
		if h&0x7c00 == 0x7c00 {
			continue
		}
		f := f16ToF32(uint16(h))
		back, ok := f32ToF16(f)
		if !ok || (back != uint16(h) && !(f == 0 && back&0x7fff == 0)) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	// ties round to even: 1 + 2⁻¹¹ is halfway between 1 and 1 + 2⁻¹⁰
	if h, _ := f32ToF16(1 + 1.0/2048); h != 0x3c00 {
		t.Fatalf("1+2^-11 -> %#04x, want 0x3c00", h)
	}
	if h, _ := f32ToF16(1 + 3.0/2048); h != 0x3c02 {
		t.Fatalf("1+3·2^-11 -> %#04x, want 0x3c02", h)
	}
	if _, ok := f32ToF16(65520); ok {
		t.Fatal("65520 rounds to infinity in fp16 but was accepted")
	}
	if h, ok := f32ToF16(65519); !ok || h != 0x7bff {
		t.Fatalf("65519 -> %#04x %v", h, ok)
	}
}

// TestCorruptPayloads checks that malformed models and updates are rejected
// with errors that say what is wrong, and leave the aggregate unchanged.
func TestCorruptPayloads(t *testing.T) {
	s := testSpec(false, 4, 3)
	rng := rand.New(rand.NewPCG(13, 14))
	global := randFactors(s, specRanks(s), rng, 0.3)
	peer := randFactors(s, specRanks(s), rng, 0.3)
	g, _ := s.EncodeModel(global, FP32)
	for _, c := range []Codec{FP32, FP16, Int8} {
		good, err := s.EncodeUpdate(nil, c, global, peer)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(good); got != s.UpdateSize(c, specRanks(s)) {
			t.Fatalf("%v: %d bytes, UpdateSize says %d", c, got, s.UpdateSize(c, specRanks(s)))
		}
		hdr := 4 + 3 + 10*len(s.Layers) + 1
		mutate := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
		cases := []struct {
			name string
			b    []byte
			want string
		}{
			{"empty", nil, "shorter than"},
			{"magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
			{"version", mutate(func(b []byte) []byte { b[4] = 9; return b }), "version"},
			{"flags", mutate(func(b []byte) []byte { b[5] = 1; return b }), "flags"},
			{"layers", mutate(func(b []byte) []byte { b[6] = 3; return b }), "layers"},
			{"shape", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[7:], 41); return b }), "40×33"},
			{"rank over", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[15:], 5); return b }), "rank 5"},
			{"rank under", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[15:], 3); return b }), "bytes of factors"},
			{"codec", mutate(func(b []byte) []byte { b[hdr-1] = 9; return b }), "codec"},
			{"truncated", good[:len(good)-1], "bytes of factors"},
			{"overlong", append(slices.Clone(good), 0), "bytes of factors"},
		}
		switch c {
		case FP32:
			cases = append(cases,
				struct {
					name string
					b    []byte
					want string
				}{"NaN", mutate(func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[hdr+8:], math.Float32bits(float32(math.NaN())))
					return b
				}), "NaN"},
				struct {
					name string
					b    []byte
					want string
				}{"Inf", mutate(func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[hdr:], math.Float32bits(float32(math.Inf(-1))))
					return b
				}), "-Inf"})
		case FP16:
			cases = append(cases, struct {
				name string
				b    []byte
				want string
			}{"fp16 Inf", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[hdr+2:], 0x7c00); return b }), "NaN or Inf"})
		case Int8:
			cases = append(cases,
				struct {
					name string
					b    []byte
					want string
				}{"scale NaN", mutate(func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[hdr:], math.Float32bits(float32(math.NaN())))
					return b
				}), "scale"},
				struct {
					name string
					b    []byte
					want string
				}{"scale negative", mutate(func(b []byte) []byte {
					binary.LittleEndian.PutUint32(b[hdr:], math.Float32bits(-1))
					return b
				}), "scale"},
				struct {
					name string
					b    []byte
					want string
				}{"-128", mutate(func(b []byte) []byte { b[hdr+4] = 0x80; return b }), "-128"})
		}
		for _, tc := range cases {
			agg, _ := NewSVD(s, SVDOptions{})
			if err := agg.Begin(1, g); err != nil {
				t.Fatal(err)
			}
			err := agg.Add(aggregate.Update{Peer: "p", Samples: 10, Payload: tc.b})
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v %s: error %v, want one containing %q", c, tc.name, err, tc.want)
			}
			if agg.Len() != 0 {
				t.Errorf("%v %s: a rejected update was counted", c, tc.name)
			}
			if _, err := agg.Finalize(); !errors.Is(err, aggregate.ErrNoUpdates) {
				t.Errorf("%v %s: Finalize after a rejection: %v", c, tc.name, err)
			}
		}
	}
	// Models: another base, another seed, truncated.
	other := s
	other.Base[0] = 1
	for name, b := range map[string][]byte{
		"other base": must(other.EncodeModel(global, FP32)),
		"truncated":  g[:len(g)-3],
		"overlong":   append(slices.Clone(g), 1),
	} {
		if _, err := s.DecodeModel(b); err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("model %s: %v", name, err)
		}
	}
	agg, _ := NewAvg(s)
	if err := agg.Add(aggregate.Update{Peer: "p", Samples: 1, Payload: must(s.EncodeUpdate(nil, FP32, global, peer))}); err == nil {
		t.Error("Add before Begin accepted")
	}
	agg.Begin(1, g)
	if err := agg.Add(aggregate.Update{Peer: "p", Samples: 0, Payload: must(s.EncodeUpdate(nil, FP32, global, peer))}); err == nil {
		t.Error("zero samples accepted")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestModelRoundTrip: models of every codec decode to what was encoded
// (within the codec's error), and fp32 exactly.
func TestModelRoundTrip(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		s := testSpec(frozen, 4, 3)
		f := randFactors(s, specRanks(s), rand.New(rand.NewPCG(1, 1)), 0.1)
		b, err := s.EncodeModel(f, FP32)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != s.ModelSize(FP32) {
			t.Fatalf("model of %d bytes, ModelSize %d", len(b), s.ModelSize(FP32))
		}
		g, err := s.DecodeModel(b)
		if err != nil {
			t.Fatal(err)
		}
		for l := range f.B {
			if !slices.Equal(g.B[l], f.B[l]) || !frozen && !slices.Equal(g.A[l], f.A[l]) {
				t.Fatalf("frozen=%v layer %d differs", frozen, l)
			}
		}
		if _, err := s.EncodeModel(f.Prefix(s, []int{2, 3}), FP32); err == nil {
			t.Fatal("a model below the spec's rank was encoded")
		}
	}
}

// FuzzDecodeUpdate: the update decoder never panics, and what it accepts has
// the spec's shapes and finite values.
func FuzzDecodeUpdate(f *testing.F) {
	s := testSpec(false, 4, 3)
	rng := rand.New(rand.NewPCG(15, 16))
	global := randFactors(s, specRanks(s), rng, 0.3)
	for _, c := range []Codec{FP32, FP16, Int8} {
		f.Add(must(s.EncodeUpdate(nil, c, global, randFactors(s, specRanks(s), rng, 0.3))))
		f.Add(must(s.EncodeUpdate(nil, c, global.Prefix(s, []int{1, 0}), randFactors(s, []int{1, 0}, rng, 0.3))))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := s.DecodeUpdate(b, global)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for l, ly := range s.Layers {
			r := len(got.B[l]) / ly.Out
			if r > ly.Rank || len(got.A[l]) != r*ly.In || len(got.B[l]) != r*ly.Out {
				t.Fatalf("layer %d: accepted shapes %d, %d", l, len(got.A[l]), len(got.B[l]))
			}
			for _, v := range append(slices.Clone(got.A[l]), got.B[l]...) {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("layer %d: accepted %v", l, v)
				}
			}
		}
	})
}

// FuzzDecodeModel: the model decoder never panics and re-encodes what it accepts.
func FuzzDecodeModel(f *testing.F) {
	for _, frozen := range []bool{false, true} {
		s := testSpec(frozen, 4, 3)
		g := randFactors(s, specRanks(s), rand.New(rand.NewPCG(1, 2)), 0.3)
		for _, c := range []Codec{FP32, FP16, Int8} {
			f.Add(frozen, must(s.EncodeModel(g, c)))
		}
	}
	f.Fuzz(func(t *testing.T, frozen bool, b []byte) {
		s := testSpec(frozen, 4, 3)
		got, err := s.DecodeModel(b)
		if err != nil {
			return
		}
		if _, err := s.EncodeModel(got, FP32); err != nil {
			t.Fatalf("accepted model does not re-encode: %v", err)
		}
	})
}

package lowrank

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"gonum.org/v1/gonum/mat"
)

// honestAround draws n peers' factors near a common adapter: each factor is
// the common one plus N(0, spread²) per value.
func honestAround(s Spec, ranks []int, common Factors, n int, spread float64, rng *rand.Rand) []Factors {
	var out []Factors
	for range n {
		f := randFactors(s, ranks, rng, spread)
		for l := range f.B {
			for i := range f.A[l] {
				f.A[l][i] += common.A[l][i]
			}
			for i := range f.B[l] {
				f.B[l][i] += common.B[l][i]
			}
		}
		out = append(out, f)
	}
	return out
}

// products returns each peer's A_kᵀB_k of layer l.
func products(s Spec, l int, peers []Factors) [][]float64 {
	ly := s.Layers[l]
	var out [][]float64
	for _, f := range peers {
		out = append(out, product(ly.In, ly.Out, f.A[l], f.B[l]))
	}
	return out
}

// outside returns by how much m leaves the coordinate-wise range of the
// products (0 when every entry is inside), and the largest range width.
func outside(m []float64, prods [][]float64) (excess, width float64) {
	for c, v := range m {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range prods {
			lo, hi = min(lo, p[c]), max(hi, p[c])
		}
		excess = max(excess, lo-v, v-hi)
		width = max(width, hi-lo)
	}
	return excess, width
}

// TestMedianWildUpdate: one wild update among five honest ones (huge, or
// sign-flipped and scaled) leaves every entry of lora-median's merged ΔW/s
// inside the honest updates' range, equal to the coordinate-wise median
// (the layers' ranks are full, so truncation drops nothing), while the same
// update drags lora-avg's (and lora-svd's) merge far outside it.
func TestMedianWildUpdate(t *testing.T) {
	s := testSpec(false, 33, 5) // full rank: min(In, Out) per layer
	ranks := []int{4, 2}
	for _, wild := range []struct {
		name   string
		forge  func(f Factors) // applied to a copy of an honest update
		factor float64         // how far outside the honest range avg must land, in range widths
	}{
		{"huge", func(f Factors) {
			for l := range f.B {
				for i := range f.A[l] {
					f.A[l][i] *= 1000
				}
				for i := range f.B[l] {
					f.B[l][i] *= 1000
				}
			}
		}, 1000},
		{"signflip", func(f Factors) {
			for l := range f.B {
				for i := range f.B[l] {
					f.B[l][i] *= -10
				}
			}
		}, 1},
	} {
		t.Run(wild.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			global := randFactors(s, specRanks(s), rng, 0.3)
			common := randFactors(s, ranks, rng, 0.5)
			honest := honestAround(s, ranks, common, 5, 0.05, rng)
			bad := Factors{A: make([][]float32, 2), B: make([][]float32, 2)}
			for l := range bad.B {
				bad.A[l], bad.B[l] = slices.Clone(honest[0].A[l]), slices.Clone(honest[0].B[l])
			}
			wild.forge(bad)
			peers := append(slices.Clone(honest), bad)
			samples := []int64{10, 20, 30, 40, 50, 1000} // the wild one claims many samples
			med, err := NewMedian(s, SVDOptions{})
			if err != nil {
				t.Fatal(err)
			}
			avg, _ := NewAvg(s)
			svd, _ := NewSVD(s, SVDOptions{})
			fm := run(t, med, s, global, peers, samples, FP32)
			fa := run(t, avg, s, global, peers, samples, FP32)
			fs := run(t, svd, s, global, peers, samples, FP32)
			for l, ly := range s.Layers {
				hp := products(s, l, honest)
				all := products(s, l, peers)
				got := product(ly.In, ly.Out, fm.A[l], fm.B[l])
				ex, width := outside(got, hp)
				if ex > 1e-4*width+1e-6 {
					t.Fatalf("layer %d: lora-median leaves the honest range by %g (range width %g)", l, ex, width)
				}
				want := make([]float64, len(got))
				buf := make([]float64, len(all))
				for c := range want {
					for k := range all {
						buf[k] = all[k][c]
					}
					slices.Sort(buf)
					want[c] = (buf[2] + buf[3]) / 2
				}
				if d := maxDiff(got, want); d > 1e-5 {
					t.Fatalf("layer %d: merged product differs from the coordinate-wise median by %g", l, d)
				}
				for name, f := range map[string]Factors{"lora-avg": fa, "lora-svd": fs} {
					ex, _ := outside(product(ly.In, ly.Out, f.A[l], f.B[l]), hp)
					if ex < wild.factor*width {
						t.Fatalf("layer %d: %s leaves the honest range by only %g (width %g): the wild update is not wild", l, name, ex, width)
					}
				}
			}
			if fr := med.DroppedFraction(); fr > 1e-9 {
				t.Fatalf("full rank: truncation dropped %g", fr)
			}
		})
	}
}

// TestMedianTruncates: below full rank, lora-median's ΔW/s is the best
// rank-R approximation of the coordinate-wise median (by a dense SVD here),
// and it reports what truncation dropped.
func TestMedianTruncates(t *testing.T) {
	s := testSpec(false, 3, 2)
	rng := rand.New(rand.NewPCG(23, 24))
	global := randFactors(s, specRanks(s), rng, 0.3)
	var peers []Factors
	for range 4 {
		peers = append(peers, randFactors(s, specRanks(s), rng, 0.3))
	}
	med, _ := NewMedian(s, SVDOptions{})
	f := run(t, med, s, global, peers, []int64{1, 2, 3, 4}, FP32)
	for l, ly := range s.Layers {
		all := products(s, l, peers)
		m := mat.NewDense(ly.In, ly.Out, nil)
		buf := make([]float64, len(all))
		for i := range ly.In {
			for o := range ly.Out {
				for k := range all {
					buf[k] = all[k][i*ly.Out+o]
				}
				slices.Sort(buf)
				m.Set(i, o, (buf[1]+buf[2])/2)
			}
		}
		var svd mat.SVD
		if !svd.Factorize(m, mat.SVDThin) {
			t.Fatal("SVD failed")
		}
		var u, v mat.Dense
		svd.UTo(&u)
		svd.VTo(&v)
		sig := svd.Values(nil)
		want := make([]float64, ly.In*ly.Out)
		var kept, total float64
		for j, sv := range sig {
			total += sv * sv
			if j >= ly.Rank {
				continue
			}
			kept += sv * sv
			for i := range ly.In {
				for o := range ly.Out {
					want[i*ly.Out+o] += sv * u.At(i, j) * v.At(o, j)
				}
			}
		}
		got := product(ly.In, ly.Out, f.A[l], f.B[l])
		if d := maxDiff(got, want); d > 1e-5 {
			t.Fatalf("layer %d: differs from the best rank-%d approximation of the median by %g", l, ly.Rank, d)
		}
		if r := med.Residuals()[l]; math.Abs(r.Fraction()-(total-kept)/total) > 1e-6 {
			t.Fatalf("layer %d: residual %v, want fraction %g", l, r, (total-kept)/total)
		}
	}
	if fr := med.DroppedFraction(); !(fr > 0.01 && fr < 1) {
		t.Fatalf("rank 3 of a full-rank median: dropped fraction %v", fr)
	}
	if m := med.RoundMetrics(); len(m) != 3 || m["svd_dropped"] != med.DroppedFraction() {
		t.Fatalf("round metrics %v", m)
	}
}

// TestMedianIdentical: when every update is the same, the median of the
// products is that product, and lora-median merges what lora-svd does (the
// same ΔW/s; factors may differ in the signs of singular vectors).
func TestMedianIdentical(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  Spec
		ranks []int
		n     int
	}{
		{"rank 4 of 12, odd", testSpec(false, 12, 5), []int{4, 2}, 3},
		{"full rank, even", testSpec(false, 12, 5), []int{12, 5}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			rng := rand.New(rand.NewPCG(25, 26))
			global := randFactors(s, specRanks(s), rng, 0.3)
			one := randFactors(s, tc.ranks, rng, 0.3)
			var peers []Factors
			var samples []int64
			for k := range tc.n {
				peers = append(peers, one)
				samples = append(samples, int64(7+k))
			}
			med, _ := NewMedian(s, SVDOptions{})
			svd, _ := NewSVD(s, SVDOptions{})
			fm := run(t, med, s, global, peers, samples, Int8)
			fs := run(t, svd, s, global, peers, samples, Int8)
			for l, ly := range s.Layers {
				pm := product(ly.In, ly.Out, fm.A[l], fm.B[l])
				ps := product(ly.In, ly.Out, fs.A[l], fs.B[l])
				if d := maxDiff(pm, ps); d > 1e-5 {
					t.Fatalf("layer %d: lora-median and lora-svd differ by %g on identical updates", l, d)
				}
				if d := maxDiff(pm, make([]float64, len(pm))); d < 1e-2 {
					t.Fatalf("layer %d: the merged product is ~0 (%g): the test compares nothing", l, d)
				}
			}
		})
	}
}

// TestMedianRejects: lora-median refuses what the other merges refuse.
func TestMedianRejects(t *testing.T) {
	if _, err := NewMedian(testSpec(true, 4, 3), SVDOptions{}); err == nil {
		t.Fatal("lora-median accepted a spec with a frozen A")
	}
	bad := testSpec(false, 4, 3)
	bad.Layers[0].Rank = 41
	if _, err := NewMedian(bad, SVDOptions{}); err == nil {
		t.Fatal("lora-median accepted a rank above the layer's sides")
	}
	s := testSpec(false, 4, 3)
	rng := rand.New(rand.NewPCG(27, 28))
	global := randFactors(s, specRanks(s), rng, 0.3)
	peer := randFactors(s, specRanks(s), rng, 0.3)
	g := must(s.EncodeModel(global, FP32))
	good := must(s.EncodeUpdate(nil, FP32, global, peer))
	med, _ := NewMedian(s, SVDOptions{})
	if med.Name() != NameMedian {
		t.Fatal(med.Name())
	}
	if err := med.Add(aggregate.Update{Peer: "p", Samples: 1, Payload: good}); err == nil {
		t.Fatal("Add before Begin accepted")
	}
	if err := med.Begin(1, g[:len(g)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated global model: %v", err)
	}
	if err := med.Begin(1, g); err != nil {
		t.Fatal(err)
	}
	nan := slices.Clone(good)
	hdr := 4 + 3 + 10*len(s.Layers) + 1
	nan[hdr], nan[hdr+1], nan[hdr+2], nan[hdr+3] = 0, 0, 0xc0, 0x7f // fp32 NaN
	other := testSpec(false, 4, 3)
	other.Layers[1].Out = 6
	for name, u := range map[string]aggregate.Update{
		"zero samples":     {Peer: "p", Samples: 0, Payload: good},
		"negative samples": {Peer: "p", Samples: -3, Payload: good},
		"truncated":        {Peer: "p", Samples: 1, Payload: good[:len(good)-2]},
		"NaN":              {Peer: "p", Samples: 1, Payload: nan},
		"frozen-A update":  {Peer: "p", Samples: 1, Payload: must(testSpec(true, 4, 3).EncodeUpdate(nil, FP32, Factors{B: global.B}, Factors{B: peer.B}))},
		"other shape": {Peer: "p", Samples: 1, Payload: func() []byte {
			return must(other.EncodeUpdate(nil, FP32, randFactors(other, specRanks(other), rng, 1), randFactors(other, specRanks(other), rng, 1)))
		}()},
	} {
		if err := med.Add(u); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "zero samples" && name != "negative samples" && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if med.Len() != 0 {
		t.Fatalf("rejected updates counted: Len %d", med.Len())
	}
	if _, err := med.Finalize(); !errors.Is(err, aggregate.ErrNoUpdates) {
		t.Fatalf("Finalize with no updates: %v", err)
	}
	if err := med.Add(aggregate.Update{Peer: "p", Samples: 1, Payload: good}); err != nil {
		t.Fatal(err)
	}
	if _, err := med.Finalize(); err != nil {
		t.Fatal(err)
	}
}

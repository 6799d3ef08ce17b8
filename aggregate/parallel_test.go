package aggregate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestParallelEqualsSerial checks that every aggregator implementing
// Parallel returns, with 2, 3 and 7 workers, the model it returns with 1,
// byte for byte (and Multi-Krum the same selection), on random updates,
// updates with a few huge outliers, and identical updates.
func TestParallelEqualsSerial(t *testing.T) {
	spec := Spec{Seed: 3, Sizes: []int{300, 100, 10}} // 31,000 weights: split
	rng := rand.New(rand.NewPCG(5, 5))
	dense := func(count int, f func(k, i int) float32) []Update {
		us := make([]Update, count)
		for k := range us {
			var w [][]float32
			i := 0
			for _, n := range spec.Layers() {
				l := make([]float32, n)
				for e := range l {
					l[e] = f(k, i)
					i++
				}
				w = append(w, l)
			}
			us[k] = Update{Peer: fmt.Sprintf("p%d", k), Samples: int64(1 + k), Payload: spec.EncodeDenseUpdate(nil, w)}
		}
		return us
	}
	ranking := func(count int, near bool) []Update {
		base := make([][]uint32, 0)
		for _, n := range spec.Layers() {
			base = append(base, identityOrder(n))
		}
		us := make([]Update, count)
		for k := range us {
			order := make([][]uint32, len(base))
			for l, b := range base {
				r := slices.Clone(b)
				if near && k%4 != 0 {
					for range len(r) / 3 {
						i := rng.IntN(len(r))
						j := min(max(i+rng.IntN(41)-20, 0), len(r)-1)
						r[i], r[j] = r[j], r[i]
					}
				} else {
					rng.Shuffle(len(r), func(i, j int) { r[i], r[j] = r[j], r[i] })
				}
				order[l] = r
			}
			us[k] = Update{Peer: fmt.Sprintf("p%d", k), Payload: spec.EncodeFRLUpdate(nil, order)}
		}
		return us
	}
	inputs := map[string][]Update{
		"dense-random-25": dense(25, func(_, _ int) float32 { return float32(rng.NormFloat64()) }),
		"dense-outliers-10": dense(10, func(k, i int) float32 {
			if k < 3 {
				return 1e30 * float32(1+i%7)
			}
			return float32(rng.NormFloat64()) * 0.05
		}),
		"dense-identical-4": dense(4, func(_, i int) float32 { return float32(i % 13) }),
		"rank-random-9":     ranking(9, false),
		"rank-near-24":      ranking(24, true),
	}
	makers := map[string]func() (Aggregator, error){
		"median":       func() (Aggregator, error) { return NewMedian(spec) },
		"trimmed-mean": func() (Aggregator, error) { return NewTrimmedMean(spec, 0.2) },
		"multi-krum":   func() (Aggregator, error) { return NewMultiKrum(spec, -1, 0) },
		"vote-median":  func() (Aggregator, error) { return NewMedianVote(spec) },
		"vote-robust":  func() (Aggregator, error) { return NewFilteredVote(spec) },
		"vote-clamp":   func() (Aggregator, error) { return NewClampedVote(spec, 0) },
	}
	denseGlobal := spec.EncodeDenseModel([][]float32{make([]float32, 30000), make([]float32, 1000)})
	frlGlobal := spec.EncodeFRLModel([][]uint32{identityOrder(30000), identityOrder(1000)})
	for in, us := range inputs {
		isDense := in[:5] == "dense"
		global := frlGlobal
		if isDense {
			global = denseGlobal
		}
		for name, mk := range makers {
			if isRanking(must(mk())) == isDense {
				continue
			}
			run := func(workers int) ([]byte, []int) {
				a := must(mk())
				a.(Parallel).SetWorkers(workers)
				if err := a.Begin(1, global); err != nil {
					t.Fatal(err)
				}
				for _, u := range us {
					if err := a.Add(u); err != nil {
						t.Fatal(err)
					}
				}
				m, err := a.Finalize()
				if err != nil {
					t.Fatal(err)
				}
				var sel []int
				if k, ok := a.(*MultiKrum); ok {
					sel = k.Selected()
				}
				return m, sel
			}
			serial, serialSel := run(1)
			for _, w := range []int{2, 3, 7} {
				got, sel := run(w)
				if !bytes.Equal(got, serial) || !slices.Equal(sel, serialSel) {
					t.Errorf("%s/%s: %d workers give another model than 1", in, name, w)
				}
			}
		}
	}
}

func identityOrder(n int) []uint32 {
	o := make([]uint32, n)
	for i := range o {
		o[i] = uint32(i)
	}
	return o
}

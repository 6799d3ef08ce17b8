package aggregate

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/rankvote"
)

// Every ranking aggregator makes the same models, round after round, from
// coded updates whether a Predecoder decoded them first, on other
// goroutines, or not; it still rejects what does not decode, and ignores
// what was predecoded against another round's model.
func TestPredecoderSameModels(t *testing.T) {
	spec := Spec{Seed: 3, Sizes: []int{40, 30, 5}}
	layers := spec.Layers()
	rng := rand.New(rand.NewPCG(5, 6))
	perm := func(n int) []uint32 { return randPerm(rng, n) }
	bounds := make([][]uint32, len(layers))
	for l, n := range layers {
		bounds[l] = rankvote.UniformBounds(n, 4)
	}
	makers := []func() (Aggregator, error){
		func() (Aggregator, error) { return NewVote(spec) },
		func() (Aggregator, error) { return NewFilteredVote(spec) },
		func() (Aggregator, error) { return NewMedianVote(spec) },
		func() (Aggregator, error) { return NewClampedVote(spec, 0) },
	}
	initial := make([][]uint32, len(layers))
	for l, n := range layers {
		initial[l] = perm(n)
	}
	for _, mk := range makers {
		for _, codec := range []string{"delta", "bucket"} {
			// updates makes round r's payloads against global.
			updates := func(global [][]uint32, seed uint64) [][]byte {
				rng := rand.New(rand.NewPCG(seed, 1))
				var out [][]byte
				for k := range 9 {
					r := make([][]uint32, len(layers))
					for l := range layers {
						r[l] = append([]uint32(nil), global[l]...)
						for range 15 {
							i := rng.IntN(len(r[l]) - 1)
							r[l][i], r[l][i+1] = r[l][i+1], r[l][i]
						}
					}
					if k == 4 {
						out = append(out, spec.EncodeFRLUpdate(nil, r)) // packed
						continue
					}
					if codec == "delta" {
						out = append(out, spec.EncodeFRLDeltaUpdate(nil, r, global, nil))
					} else {
						out = append(out, spec.EncodeFRLBucketUpdate(nil, r, global, bounds, nil))
					}
				}
				bad := bytes.Clone(out[0])
				return append(out, bad[:len(bad)-1]) // truncated: rejected
			}
			run := func(predecode bool) [][]byte {
				a := must(mk())
				global := initial
				gm := spec.EncodeFRLModel(global)
				var models [][]byte
				var stale [][]byte // predecoded against the previous round's model
				for round := uint64(1); round <= 3; round++ {
					us := updates(global, round)
					if err := a.Begin(round, gm); err != nil {
						t.Fatal(err)
					}
					if predecode {
						pre := a.(Predecoding).Predecoder()
						var wg sync.WaitGroup
						for _, u := range us {
							wg.Go(func() { pre.Decode(gm, u) })
						}
						wg.Wait()
					}
					for i, u := range append(us, stale...) {
						// A stale update decodes against this round's
						// model, as it would without the predecoder (the
						// node's model-hash check keeps it out).
						err := a.Add(Update{Peer: fmt.Sprint("p", i), Payload: u})
						if i >= len(us) {
							continue
						}
						if wantErr := i == len(us)-1; wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
							t.Fatalf("%s %s round %d update %d: %v", a.Name(), codec, round, i, err)
						}
					}
					if predecode {
						// Every coded update that decodes: 8 of 9 (one is packed).
						if h := a.(Predecoding).Predecoder().Hits(); h != 8*int(round) {
							t.Fatalf("%s %s round %d: %d updates taken predecoded, want %d", a.Name(), codec, round, h, 8*round)
						}
					}
					m, err := a.Finalize()
					if err != nil {
						t.Fatal(err)
					}
					models = append(models, m)
					stale = us[:2]
					gm = m
					if global, err = spec.DecodeFRLModel(m, nil); err != nil {
						t.Fatal(err)
					}
				}
				return models
			}
			plain, pre := run(false), run(true)
			for r := range plain {
				if !bytes.Equal(plain[r], pre[r]) {
					t.Fatalf("%s %s round %d: the model differs with the predecoder", must(mk()).Name(), codec, r+1)
				}
			}
		}
	}
}

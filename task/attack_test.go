package task

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/model"
)

// smallData is a synthetic 3-class problem on 4x4 images, 4 clients of 10.
func smallData(t *testing.T) Data {
	t.Helper()
	rng := rand.New(rand.NewPCG(5, 6))
	set := &data.Set{N: 50, Rows: 4, Cols: 4, Classes: 3, Pixels: make([]uint8, 50*16), Labels: make([]uint8, 50)}
	for k := range set.N {
		set.Labels[k] = uint8(rng.IntN(3))
		for i := range 16 {
			if rng.IntN(3) == 0 {
				set.Pixels[k*16+i] = uint8(rng.IntN(256))
			}
		}
	}
	in, err := model.NewInputs(set, 0.2, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	parts := make(data.Partition, 4)
	for c := range parts {
		for k := range 10 {
			parts[c] = append(parts[c], c*10+k)
		}
	}
	return Data{Train: in, Test: in, Parts: parts}
}

func smallFRL(t *testing.T) *FRL {
	cfg := DefaultFRL(3)
	cfg.Name, cfg.Sizes = "frl-small", []int{16, 8, 3}
	tk, err := NewFRL(cfg, smallData(t))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func smallDense(t *testing.T) *Dense {
	cfg := DefaultFedAvg(3)
	cfg.Name, cfg.Sizes = "dense-small", []int{16, 8, 3}
	tk, err := NewDense(cfg, smallData(t))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func jobOf(tk Task, client int) Job {
	m, _ := tk.InitialModel()
	return Job{Client: client, Round: 1, Model: m, Seed: 77 + uint64(client)}
}

// acceptedByAll checks that every aggregator of tk takes the payloads.
func acceptedByAll(t *testing.T, tk Task, payloads ...[]byte) {
	t.Helper()
	global, _ := tk.InitialModel()
	for _, name := range tk.Info().Aggregators {
		a, err := tk.NewAggregator(name)
		if err != nil {
			t.Fatal(err)
		}
		if a.Name() != name {
			t.Errorf("NewAggregator(%q) is named %q", name, a.Name())
		}
		if err := a.Begin(1, global); err != nil {
			t.Fatal(err)
		}
		for i, p := range payloads {
			if err := a.Add(aggregate.Update{Peer: "attacker", Samples: 10, Payload: p}); err != nil {
				t.Fatalf("%s rejects payload %d: %v", name, i, err)
			}
		}
		if _, err := a.Finalize(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestFRLReverse(t *testing.T) {
	tk := smallFRL(t)
	var honest [][]byte
	for c := range 3 {
		p, err := tk.Train(jobOf(tk, c))
		if err != nil {
			t.Fatal(err)
		}
		honest = append(honest, p)
	}
	// One attacker: exactly the reverse of its own ranking.
	rev, err := tk.Poison(Poison{Attack: AttackReverse, Job: jobOf(tk, 0), Honest: honest[:1]})
	if err != nil {
		t.Fatal(err)
	}
	own, _ := tk.Spec().DecodeFRLUpdate(honest[0], nil)
	got, err := tk.Spec().DecodeFRLUpdate(rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	for l := range own {
		slices.Reverse(own[l])
		if !slices.Equal(got[l], own[l]) {
			t.Fatalf("layer %d: not the reverse of the attacker's ranking", l)
		}
	}
	// Three: the reverse of their Borda vote, the same for each of them.
	vote, _ := tk.NewAggregator("vote")
	global, _ := tk.InitialModel()
	_ = vote.Begin(1, global)
	for _, h := range honest {
		if err := vote.Add(aggregate.Update{Peer: "a", Samples: 1, Payload: h}); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := vote.Finalize()
	collective, _ := tk.Spec().DecodeFRLModel(m, nil)
	for c := range 3 {
		rev, err := tk.Poison(Poison{Attack: AttackReverse, Job: jobOf(tk, c), Honest: honest})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := tk.Spec().DecodeFRLUpdate(rev, nil)
		for l := range got {
			slices.Reverse(got[l])
			if !slices.Equal(got[l], collective[l]) {
				t.Fatalf("attacker %d, layer %d: not the reverse of the collective ranking", c, l)
			}
		}
		acceptedByAll(t, tk, rev)
	}
	if _, err := tk.Poison(Poison{Attack: AttackReverse, Job: jobOf(tk, 0)}); err == nil {
		t.Error("reverse without honest updates accepted")
	}
	if _, err := tk.Poison(Poison{Attack: AttackReverse, Job: jobOf(tk, 0), Honest: [][]byte{[]byte("junk")}}); !errors.Is(err, aggregate.ErrMalformed) {
		t.Errorf("reverse of a malformed update: %v", err)
	}
}

func TestFRLRandomAndKinds(t *testing.T) {
	tk := smallFRL(t)
	a, err := tk.Poison(Poison{Attack: AttackRandom, Job: jobOf(tk, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tk.Poison(Poison{Attack: AttackRandom, Job: jobOf(tk, 1)})
	c, _ := tk.Poison(Poison{Attack: AttackRandom, Job: jobOf(tk, 2)})
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Error("random rankings are not a function of the job's seed")
	}
	acceptedByAll(t, tk, a, c)
	for _, attack := range []string{AttackSignFlip, AttackNoise, AttackScale, AttackBoost, AttackMinMax, AttackMinSum, AttackLabelFlip, "bogus"} {
		if _, err := tk.Poison(Poison{Attack: attack, Job: jobOf(tk, 1)}); !errors.Is(err, ErrAttackKind) {
			t.Errorf("FRL %s: %v, want ErrAttackKind", attack, err)
		}
	}
	if tk.UpdateKind() != Rankings {
		t.Errorf("FRL update kind %q", tk.UpdateKind())
	}
}

func TestDenseSignFlipAndNoise(t *testing.T) {
	tk := smallDense(t)
	job := jobOf(tk, 2)
	honest, err := tk.Train(job)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := tk.Spec().DecodeDenseModel(job.Model, nil)
	h, _ := tk.Spec().DecodeDenseUpdate(honest, nil)

	flip, err := tk.Poison(Poison{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := tk.Spec().DecodeDenseUpdate(flip, nil)
	for l := range w {
		for i := range w[l] {
			want := float32(float64(g[l][i]) - 10*(float64(h[l][i])-float64(g[l][i])))
			if w[l][i] != want {
				t.Fatalf("layer %d weight %d: %v, want g-10(h-g) = %v", l, i, w[l][i], want)
			}
		}
	}
	// A scale that overflows float32 is clamped: the payload stays well formed.
	huge, err := tk.Poison(Poison{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}, Scale: 1e300})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := tk.Spec().DecodeDenseUpdate(huge, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := slices.Max(slices.Concat(wh...)); m != math.MaxFloat32 {
		t.Errorf("largest weight %v, want clamped to MaxFloat32", m)
	}

	noisy, err := tk.Poison(Poison{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := tk.Poison(Poison{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}})
	if !bytes.Equal(noisy, again) {
		t.Error("noise is not a function of the job's seed")
	}
	wn, _ := tk.Spec().DecodeDenseUpdate(noisy, nil)
	var ss float64
	count := 0
	for l := range wn {
		for i := range wn[l] {
			d := float64(wn[l][i] - h[l][i])
			ss += d * d
			count++
		}
	}
	if sd := math.Sqrt(ss / float64(count)); sd < 0.8 || sd > 1.2 { // 152 weights, sigma 1
		t.Errorf("noise standard deviation %.3f, want about %v", sd, DefaultNoiseSigma)
	}
	acceptedByAll(t, tk, flip, huge, noisy, honest)

	for _, p := range []Poison{
		{Attack: AttackReverse, Job: job, Honest: [][]byte{honest}},
		{Attack: AttackRandom, Job: job},
		{Attack: AttackAdaptive, Job: job, Honest: [][]byte{honest}},
		{Attack: AttackLabelFlip, Job: job},
	} {
		if _, err := tk.Poison(p); !errors.Is(err, ErrAttackKind) {
			t.Errorf("dense %s: %v, want ErrAttackKind", p.Attack, err)
		}
	}
	for _, p := range []Poison{
		{Attack: AttackSignFlip, Job: job},
		{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}, Scale: -1},
		{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}, Sigma: math.Inf(1)},
		{Attack: AttackNoise, Job: job, Honest: [][]byte{[]byte("junk")}},
	} {
		if _, err := tk.Poison(p); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if tk.UpdateKind() != Weights {
		t.Errorf("dense update kind %q", tk.UpdateKind())
	}
}

// TestTrainFlipped: label flipping trains another update than honest
// training, deterministically, without changing honest training (FRL,
// dense, and adapters with a factor merge and in fedavg mode).
func TestTrainFlipped(t *testing.T) {
	for _, tk := range []Attackable{smallFRL(t), smallDense(t), attackLoRA(t, MergeMedian, "int8"), attackLoRA(t, MergeFedAvg, "int8")} {
		job := jobOf(tk, 1)
		honest, err := tk.Train(job)
		if err != nil {
			t.Fatal(err)
		}
		flipped, err := tk.TrainFlipped(job)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := tk.TrainFlipped(job)
		if bytes.Equal(honest, flipped) || !bytes.Equal(flipped, again) {
			t.Errorf("%s (%s): flipped training equal to honest, or not deterministic", tk.Info().Name, tk.Info().DefaultAggregator)
		}
		if again, _ := tk.Train(job); !bytes.Equal(again, honest) {
			t.Errorf("%s (%s): flipped training changed honest training", tk.Info().Name, tk.Info().DefaultAggregator)
		}
		acceptedByAll(t, tk, flipped)
	}
	in := &model.Inputs{Classes: 10, Labels: []uint8{0, 3, 9, 5}}
	if got := flipLabels(in).Labels; !slices.Equal(got, []uint8{9, 6, 0, 4}) || !slices.Equal(in.Labels, []uint8{0, 3, 9, 5}) {
		t.Errorf("flipLabels: %v (original now %v)", got, in.Labels)
	}
}

func TestAggregatorRegistry(t *testing.T) {
	for _, tk := range []Task{smallFRL(t), smallDense(t)} {
		info := tk.Info()
		if info.DefaultAggregator != info.Aggregators[0] {
			t.Errorf("%s: default %q is not first in %v", info.Name, info.DefaultAggregator, info.Aggregators)
		}
		a, err := tk.NewAggregator("")
		if err != nil || a.Name() != info.DefaultAggregator {
			t.Errorf("%s: default aggregator %v, %v", info.Name, a, err)
		}
		if _, err := tk.NewAggregator("nope"); err == nil {
			t.Errorf("%s: unknown aggregator accepted", info.Name)
		}
	}
}

// TestFRLForgedUpdatesInTheFederationCodec: in a federation of a coded
// ranking format, forged rankings go out in that format (the aggregator
// takes no other), and a packed ranking is rejected.
func TestFRLForgedUpdatesInTheFederationCodec(t *testing.T) {
	for _, codec := range []string{CodecDelta, "bucket-mask:16", "bucket:4"} {
		cfg := DefaultFRL(3)
		cfg.Name, cfg.Sizes, cfg.Codec = "frl-small", []int{16, 8, 3}, codec
		tk, err := NewFRL(cfg, smallData(t))
		if err != nil {
			t.Fatal(err)
		}
		h0, err := tk.Train(jobOf(tk, 0))
		if err != nil {
			t.Fatal(err)
		}
		var forged [][]byte
		for _, attack := range []string{AttackReverse, AttackRandom, AttackAdaptive} {
			p, err := tk.Poison(Poison{Attack: attack, Job: jobOf(tk, 1), Honest: [][]byte{h0}, Target: DefaultAdaptiveTarget})
			if err != nil {
				t.Fatalf("%s %s: %v", codec, attack, err)
			}
			if !bytes.Equal(p[:4], h0[:4]) {
				t.Errorf("%s %s: forged update's format %q, honest %q", codec, attack, p[:4], h0[:4])
			}
			forged = append(forged, p)
		}
		acceptedByAll(t, tk, forged...)
		global, _ := tk.InitialModel()
		order, _ := tk.Spec().DecodeFRLModel(global, nil)
		packed := tk.Spec().EncodeFRLUpdate(nil, order)
		for _, name := range tk.Info().Aggregators {
			a, err := tk.NewAggregator(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Begin(1, global); err != nil {
				t.Fatal(err)
			}
			if err := a.Add(aggregate.Update{Peer: "p", Samples: 1, Payload: packed}); !errors.Is(err, aggregate.ErrMalformed) {
				t.Errorf("%s %s: a packed update: %v", codec, name, err)
			}
		}
	}
}

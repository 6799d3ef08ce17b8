package task

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/lowrank"
)

func attackLoRA(t *testing.T, merge, codec string) *LoRA {
	t.Helper()
	cfg := DefaultLoRA(5)
	cfg.Merge, cfg.Compression = merge, codec
	tk, err := NewLoRA(cfg, loadSmallBase(t), loraSmallData(t))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// loraJobWithB is a job whose global adapter has a non-zero B (B0 = 0 in
// the initial model would hide a sign flip that forgot B0).
func loraJobWithB(t *testing.T, tk *LoRA, client int) Job {
	t.Helper()
	m0, _ := tk.InitialModel()
	g, err := tk.Spec().DecodeModel(m0)
	if err != nil {
		t.Fatal(err)
	}
	for l := range g.B {
		for i := range g.B[l] {
			g.B[l][i] = float32(math.Sin(float64(i+7*l))) * 0.01
		}
	}
	m, err := tk.Spec().EncodeModel(g, lowrank.FP32)
	if err != nil {
		t.Fatal(err)
	}
	return Job{Client: client, Round: 3, Model: m, Seed: 91 + uint64(client)}
}

// TestLoRASignFlipAndNoise: on adapter updates, signflip sends
// B0 - 10·(B - B0) with A as trained, noise adds N(0, 1) to every factor
// value; both are deterministic, well formed for every merge and codec
// (also at a scale that would overflow), and the other attacks are refused.
func TestLoRASignFlipAndNoise(t *testing.T) {
	for _, tc := range []struct{ merge, codec string }{
		{MergeSVD, "fp32"}, {MergeAvg, "int8"}, {MergeMedian, "fp16"}, {MergeFFA, "int8"},
	} {
		t.Run(tc.merge+"-"+tc.codec, func(t *testing.T) {
			tk := attackLoRA(t, tc.merge, tc.codec)
			if tk.UpdateKind() != Factors {
				t.Fatalf("update kind %q", tk.UpdateKind())
			}
			spec := tk.Spec()
			job := loraJobWithB(t, tk, 2)
			honest, err := tk.Train(job)
			if err != nil {
				t.Fatal(err)
			}
			g, _ := spec.DecodeModel(job.Model)
			h, err := spec.DecodeUpdate(honest, g)
			if err != nil {
				t.Fatal(err)
			}
			flip, err := tk.Poison(Poison{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}})
			if err != nil {
				t.Fatal(err)
			}
			if len(flip) != len(honest) {
				t.Errorf("forged update of %d bytes, honest %d", len(flip), len(honest))
			}
			f, err := spec.DecodeUpdate(flip, g)
			if err != nil {
				t.Fatal(err)
			}
			for l := range f.B {
				// The forged difference is coded like an honest one: allow
				// the codec's rounding, relative to the layer's largest.
				var big, worst float64
				for i, v := range f.B[l] {
					want := float64(g.B[l][i]) - 10*(float64(h.B[l][i])-float64(g.B[l][i]))
					big = max(big, math.Abs(want-float64(g.B[l][i])))
					worst = max(worst, math.Abs(float64(v)-want))
				}
				tol := map[string]float64{"fp32": 1e-6, "fp16": 1e-3, "int8": 1e-2}[tc.codec]
				if big == 0 || worst > tol*big {
					t.Fatalf("layer %d B: off B0-10(B-B0) by %g (largest step %g)", l, worst, big)
				}
				if f.A != nil && tc.codec == "fp32" && !slices.Equal(f.A[l], h.A[l]) {
					t.Fatalf("layer %d: A changed; signflip flips B only", l)
				}
			}
			huge, err := tk.Poison(Poison{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}, Scale: 1e300})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := spec.DecodeUpdate(huge, g); err != nil {
				t.Fatalf("huge sign flip does not decode: %v", err)
			}
			noisy, err := tk.Poison(Poison{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}})
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := tk.Poison(Poison{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}}); !bytes.Equal(noisy, again) {
				t.Error("noise is not a function of the job's seed")
			}
			other := job
			other.Seed++
			if diff, _ := tk.Poison(Poison{Attack: AttackNoise, Job: other, Honest: [][]byte{honest}}); bytes.Equal(noisy, diff) {
				t.Error("noise ignores the job's seed")
			}
			n, _ := spec.DecodeUpdate(noisy, g)
			var ss float64
			count := 0
			add := func(a, b []float32) {
				for i := range a {
					d := float64(a[i] - b[i])
					ss += d * d
					count++
				}
			}
			for l := range n.B {
				if n.A != nil {
					add(n.A[l], h.A[l])
				}
				add(n.B[l], h.B[l])
			}
			if sd := math.Sqrt(ss / float64(count)); sd < 0.9 || sd > 1.1 {
				t.Errorf("noise standard deviation %.3f over %d values, want about %v", sd, count, DefaultNoiseSigma)
			}
			acceptedByAll(t, tk, flip, huge, noisy, honest)
			for _, p := range []Poison{
				{Attack: AttackReverse, Job: job, Honest: [][]byte{honest}},
				{Attack: AttackRandom, Job: job},
				{Attack: AttackScale, Job: job},
				{Attack: AttackMinMax, Job: job, Honest: [][]byte{honest}},
				{Attack: AttackLabelFlip, Job: job},
			} {
				if _, err := tk.Poison(p); !errors.Is(err, ErrAttackKind) {
					t.Errorf("%s: %v, want ErrAttackKind", p.Attack, err)
				}
			}
			for _, p := range []Poison{
				{Attack: AttackSignFlip, Job: job},
				{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest, honest}},
				{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}, Scale: -1},
				{Attack: AttackNoise, Job: job, Honest: [][]byte{honest}, Sigma: math.Inf(1)},
				{Attack: AttackNoise, Job: job, Honest: [][]byte{[]byte("junk")}},
				{Attack: AttackNoise, Job: Job{Client: 2, Round: 3, Model: []byte("junk")}, Honest: [][]byte{honest}},
			} {
				if _, err := tk.Poison(p); err == nil {
					t.Errorf("%s with %d honest updates, scale %v, sigma %v: accepted", p.Attack, len(p.Honest), p.Scale, p.Sigma)
				}
			}
		})
	}
}

// TestLoRAFedAvgAttacks: lora-mnist's fedavg baseline sends dense weights,
// and takes the weight attacks as task.Dense does.
func TestLoRAFedAvgAttacks(t *testing.T) {
	tk := attackLoRA(t, MergeFedAvg, "")
	if tk.UpdateKind() != Weights {
		t.Fatalf("update kind %q", tk.UpdateKind())
	}
	job := jobOf(tk, 1)
	honest, err := tk.Train(job)
	if err != nil {
		t.Fatal(err)
	}
	flip, err := tk.Poison(Poison{Attack: AttackSignFlip, Job: job, Honest: [][]byte{honest}})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := tk.dense.DecodeDenseModel(job.Model, nil)
	h, _ := tk.dense.DecodeDenseUpdate(honest, nil)
	w, _ := tk.dense.DecodeDenseUpdate(flip, nil)
	for l := range w {
		for i := range w[l] {
			if want := float32(float64(g[l][i]) - 10*(float64(h[l][i])-float64(g[l][i]))); w[l][i] != want {
				t.Fatalf("layer %d weight %d: %v, want %v", l, i, w[l][i], want)
			}
		}
	}
	minmax, err := tk.Poison(Poison{Attack: AttackMinMax, Job: job, Honest: [][]byte{honest, honest}})
	if err != nil {
		t.Fatal(err)
	}
	acceptedByAll(t, tk, flip, minmax)
	if _, err := tk.Poison(Poison{Attack: AttackReverse, Job: job, Honest: [][]byte{honest}}); !errors.Is(err, ErrAttackKind) {
		t.Errorf("reverse on weights: %v", err)
	}
}

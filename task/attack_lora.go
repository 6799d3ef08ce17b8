package task

import (
	"cmp"
	"fmt"
	"math"

	"github.com/fedrank/fedrank/lowrank"
)

// UpdateKind implements Attackable: Factors for the adapter merges, Weights
// for the fedavg baseline (the whole dense network).
func (t *LoRA) UpdateKind() UpdateKind {
	if t.net == nil {
		return Weights
	}
	return Factors
}

// Poison implements Attackable. The fedavg baseline's updates are dense
// weights, poisoned as task.Dense's (every Weights attack). Adapter updates
// take AttackSignFlip and AttackNoise, made from the attacker's own honest
// update (p.Honest, one) and the round's global factors (p.Job.Model):
//
//   - AttackNoise: the trained factors + N(0, Sigma²) on every value, A's
//     (when it travels) and B's.
//   - AttackSignFlip: B' = B0 − Scale·(B − B0) (B0 the global B, B the
//     trained), A left as trained. The product is what counts: with A
//     frozen (lora-ffa) ΔW' − ΔW0 = −Scale·Aᵀ(B − B0), exactly the honest
//     step flipped and scaled. With A free, flipping both factors would not
//     flip the product: (A0 − sΔA)ᵀ(B0 − sΔB) is A0ᵀB0 − s(ΔAᵀB0 + A0ᵀΔB)
//     plus s²ΔAᵀΔB, a second-order term that keeps the honest sign and
//     grows as s²; flipping B only gives ΔW' − ΔW0 = ΔAᵀB0 − s·AᵀΔB (A the
//     trained one), linear in s: B's part of the step flipped and scaled,
//     A's part (zero in round 1, where B0 = 0) kept.
//
// The forged update is sent at the honest update's ranks in the task's
// codec, as honest peers send theirs; values are clamped so that it always
// encodes (differences within ±65000 in fp16, ±1e30 otherwise).
func (t *LoRA) Poison(p Poison) ([]byte, error) {
	if t.net == nil {
		d := &Dense{cfg: DenseConfig{Name: t.cfg.Name, Sizes: t.base.Sizes, Seed: t.cfg.Seed}, spec: t.dense}
		return d.Poison(p)
	}
	if p.Attack != AttackSignFlip && p.Attack != AttackNoise {
		return nil, fmt.Errorf("task %s: %q: %w (%s; have: %s, %s, %s)", t.cfg.Name, p.Attack, ErrAttackKind,
			Factors, AttackSignFlip, AttackNoise, AttackLabelFlip)
	}
	if len(p.Honest) != 1 {
		return nil, fmt.Errorf("task %s: %s needs the attacker's honest update, got %d updates", t.cfg.Name, p.Attack, len(p.Honest))
	}
	global, err := t.spec.DecodeModel(p.Job.Model)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
	}
	trained, err := t.spec.DecodeUpdate(p.Honest[0], global)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: honest update: %w", t.cfg.Name, p.Attack, err)
	}
	ranks := make([]int, len(t.spec.Layers))
	for l, ly := range t.spec.Layers {
		ranks[l] = trained.Rank(l, ly.Out)
	}
	start := global.Prefix(t.spec, ranks)
	limit := 1e30
	if t.codec == lowrank.FP16 {
		limit = 65000
	}
	// set writes start + d, with d clamped to ±limit.
	set := func(dst []float32, i int, st float32, d float64) {
		dst[i] = float32(float64(st) + min(max(d, -limit), limit))
	}
	if p.Attack == AttackNoise {
		sigma := cmp.Or(p.Sigma, DefaultNoiseSigma)
		if !(sigma > 0 && !math.IsInf(sigma, 1)) {
			return nil, fmt.Errorf("task %s: %s: sigma %v, want > 0", t.cfg.Name, p.Attack, sigma)
		}
		rng := attackRand(p.Job)
		for l := range trained.B {
			if trained.A != nil {
				for i, v := range trained.A[l] {
					set(trained.A[l], i, start.A[l][i], float64(v-start.A[l][i])+sigma*rng.NormFloat64())
				}
			}
			for i, v := range trained.B[l] {
				set(trained.B[l], i, start.B[l][i], float64(v-start.B[l][i])+sigma*rng.NormFloat64())
			}
		}
	} else {
		s := cmp.Or(p.Scale, float64(DefaultFlipScale))
		if !(s > 0 && !math.IsInf(s, 1)) {
			return nil, fmt.Errorf("task %s: %s: scale %v, want > 0", t.cfg.Name, p.Attack, s)
		}
		for l := range trained.B {
			for i, v := range trained.B[l] {
				set(trained.B[l], i, start.B[l][i], -s*float64(v-start.B[l][i]))
			}
		}
	}
	return t.spec.EncodeUpdate(nil, t.codec, start, trained)
}

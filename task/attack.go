package task

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/rankvote"
)

// UpdateKind names what a task's update payloads hold. It decides which
// attacks apply to the task.
type UpdateKind string

// The update kinds of the built-in tasks.
const (
	Rankings UpdateKind = "rankings" // per layer, a permutation of the edges (FRL)
	Weights  UpdateKind = "weights"  // dense float32 weights (FedAvg and the robust dense aggregators)
)

// Attack names (DESIGN.md section 4).
const (
	AttackReverse   = "reverse"   // rankings: the reverse of the round's attackers' collective ranking
	AttackRandom    = "random"    // rankings: a uniformly random permutation per layer
	AttackSignFlip  = "signflip"  // weights: global - Scale·(trained - global)
	AttackNoise     = "noise"     // weights: trained + N(0, Sigma²) per weight
	AttackLabelFlip = "labelflip" // both: honest training on flipped labels (TrainFlipped)
)

// Default strengths of the dense attacks.
const (
	// DefaultFlipScale makes a sign-flipping attacker step 10 times as far as
	// its honest training did, the other way.
	DefaultFlipScale = 10
	// DefaultNoiseSigma is the standard deviation of the noise added to every
	// weight, about 20 times the spread of the initial first-layer weights.
	DefaultNoiseSigma = 1
)

// ErrAttackKind is returned (wrapped) by Poison for an attack that does not
// apply to the task's updates.
var ErrAttackKind = errors.New("attack does not apply to this task's updates")

// Poison is what an attacker's forged update is made from.
type Poison struct {
	Attack string // AttackReverse, AttackRandom, AttackSignFlip or AttackNoise
	// Job is the attacker's own job: round, global model, and the seed of its
	// random draws.
	Job Job
	// Honest holds honestly trained updates: for AttackReverse those of every
	// attacker of the round (all of them send the same reversed ranking), for
	// AttackSignFlip and AttackNoise the attacker's own (one). AttackRandom
	// needs none.
	Honest [][]byte
	Scale  float64 // AttackSignFlip; 0 means DefaultFlipScale
	Sigma  float64 // AttackNoise; 0 means DefaultNoiseSigma
}

// Attackable is the optional interface of a Task whose updates simulated
// attackers can forge; FRL and Dense implement it. It stands apart from Task so
// that drivers that never attack (the daemon) are unaffected.
type Attackable interface {
	Task
	// UpdateKind says what the task's update payloads hold.
	UpdateKind() UpdateKind
	// Poison returns a forged update. Whatever the inputs, the result is well
	// formed: the task's aggregators accept it (its content is the attack).
	Poison(p Poison) ([]byte, error)
	// TrainFlipped is Train on the client's data with every label l replaced
	// by classes-1-l (label flipping). It is deterministic like Train.
	TrainFlipped(job Job) ([]byte, error)
}

var (
	_ Attackable = (*FRL)(nil)
	_ Attackable = (*Dense)(nil)
)

// flipLabels returns in with every label l replaced by Classes-1-l; the
// images are shared, not copied. nil (no training data) stays nil.
func flipLabels(in *model.Inputs) *model.Inputs {
	if in == nil {
		return nil
	}
	out := *in
	out.Labels = make([]uint8, len(in.Labels))
	for k, l := range in.Labels {
		out.Labels[k] = uint8(in.Classes - 1 - int(l))
	}
	return &out
}

// attackRand is the generator of an attacker's random draws.
func attackRand(job Job) *rand.Rand {
	return rand.New(rand.NewPCG(job.Seed, uint64(job.Client)^0xa77ac4))
}

// UpdateKind implements Attackable.
func (t *FRL) UpdateKind() UpdateKind { return Rankings }

// Poison implements Attackable for AttackReverse and AttackRandom.
func (t *FRL) Poison(p Poison) ([]byte, error) {
	layers := t.spec.Layers()
	order := make([][]uint32, len(layers))
	switch p.Attack {
	case AttackReverse:
		if len(p.Honest) == 0 {
			return nil, fmt.Errorf("task %s: %s needs the honest updates of the round's attackers", t.cfg.Name, p.Attack)
		}
		vote := rankvote.NewVote(layers)
		var r [][]uint32
		for i, h := range p.Honest {
			var err error
			if r, err = t.spec.DecodeFRLUpdate(h, r); err != nil {
				return nil, fmt.Errorf("task %s: %s: honest update %d: %w", t.cfg.Name, p.Attack, i, err)
			}
			if err := vote.Add(r); err != nil {
				return nil, fmt.Errorf("task %s: %s: honest update %d: %w", t.cfg.Name, p.Attack, i, err)
			}
		}
		for l := range order {
			order[l] = vote.Result(l, nil)
			slices.Reverse(order[l])
		}
	case AttackRandom:
		rng := attackRand(p.Job)
		for l, n := range layers {
			o := make([]uint32, n)
			for i := range o {
				o[i] = uint32(i)
			}
			rng.Shuffle(n, func(i, j int) { o[i], o[j] = o[j], o[i] })
			order[l] = o
		}
	default:
		return nil, fmt.Errorf("task %s: %q: %w (%s; have: %s, %s, %s)", t.cfg.Name, p.Attack, ErrAttackKind,
			Rankings, AttackReverse, AttackRandom, AttackLabelFlip)
	}
	return t.spec.EncodeFRLUpdate(make([]byte, 0, t.spec.FRLUpdateSize()), order), nil
}

// UpdateKind implements Attackable.
func (t *Dense) UpdateKind() UpdateKind { return Weights }

// Poison implements Attackable for AttackSignFlip and AttackNoise. Weights
// that would overflow float32 are clamped to ±math.MaxFloat32.
func (t *Dense) Poison(p Poison) ([]byte, error) {
	if p.Attack != AttackSignFlip && p.Attack != AttackNoise {
		return nil, fmt.Errorf("task %s: %q: %w (%s; have: %s, %s, %s)", t.cfg.Name, p.Attack, ErrAttackKind,
			Weights, AttackSignFlip, AttackNoise, AttackLabelFlip)
	}
	if len(p.Honest) != 1 {
		return nil, fmt.Errorf("task %s: %s needs the attacker's honest update, got %d updates", t.cfg.Name, p.Attack, len(p.Honest))
	}
	w, err := t.spec.DecodeDenseUpdate(p.Honest[0], nil)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: honest update: %w", t.cfg.Name, p.Attack, err)
	}
	if p.Attack == AttackSignFlip {
		g, err := t.spec.DecodeDenseModel(p.Job.Model, nil)
		if err != nil {
			return nil, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
		}
		s := cmp.Or(p.Scale, DefaultFlipScale)
		if !(s > 0 && !math.IsInf(s, 1)) {
			return nil, fmt.Errorf("task %s: %s: scale %v, want > 0", t.cfg.Name, p.Attack, s)
		}
		for l, layer := range w {
			for i, v := range layer {
				gv := float64(g[l][i])
				layer[i] = clampFloat32(gv - s*(float64(v)-gv))
			}
		}
	} else {
		sigma := cmp.Or(p.Sigma, DefaultNoiseSigma)
		if !(sigma > 0 && !math.IsInf(sigma, 1)) {
			return nil, fmt.Errorf("task %s: %s: sigma %v, want > 0", t.cfg.Name, p.Attack, sigma)
		}
		rng := attackRand(p.Job)
		for _, layer := range w {
			for i, v := range layer {
				layer[i] = clampFloat32(float64(v) + sigma*rng.NormFloat64())
			}
		}
	}
	return t.spec.EncodeDenseUpdate(nil, w), nil
}

func clampFloat32(x float64) float32 {
	return float32(min(max(x, -math.MaxFloat32), math.MaxFloat32))
}

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
	Factors  UpdateKind = "factors"  // low-rank adapter factors (LoRA: lora-svd, lora-avg, lora-ffa, lora-median)
)

// Attack names (DESIGN.md section 4).
const (
	AttackReverse   = "reverse"   // rankings: the reverse of the attackers' collective ranking
	AttackRandom    = "random"    // rankings: a uniformly random permutation per layer
	AttackAdaptive  = "adaptive"  // rankings: crosses the mask's boundaries within vote-robust's distance limit
	AttackSignFlip  = "signflip"  // weights: global - Scale·(trained - global); factors: the same on B (LoRA.Poison)
	AttackNoise     = "noise"     // weights, factors: trained + N(0, Sigma²) per value
	AttackScale     = "scale"     // weights: global + Scale·global (the FRL reference's scaling attack)
	AttackBoost     = "boost"     // weights: global + Scale·(trained - global)
	AttackMinMax    = "minmax"    // weights: NDSS'21 min-max, within the benign updates' largest distance
	AttackMinSum    = "minsum"    // weights: NDSS'21 min-sum, within the benign updates' largest distance sum
	AttackLabelFlip = "labelflip" // all kinds: honest training on flipped labels (TrainFlipped)
)

// The adaptive attack's variants against a filter on how alike the voters'
// rankings are (BENCHMARKS.md, issue 9): the round's attackers send
// different rankings.
const (
	// AttackAdaptiveSplit is AttackAdaptive with the edges to move dealt out
	// among the round's attackers, each moved by Group of them.
	AttackAdaptiveSplit = "adaptive-split"
	// AttackAdaptiveNoise is AttackAdaptive whose attackers all send the
	// same moves on a share 1-Noise of the distance budget, and each its
	// own moves, of edges inside the mask's unkept middle by the estimated
	// clamp radius, on the rest: their push is shared, their rankings are
	// not alike.
	AttackAdaptiveNoise = "adaptive-noise"
)

// AttackAdaptiveRotate knows a vote that counts only the direction of each
// voter's move of an edge (a sign vote, "vote-sign" of commit feed6b6,
// screened and dropped: BENCHMARKS.md, issue 9): it stays inside vote-robust's
// distance limit as AttackAdaptive does, and, in every layer, swaps the
// w positions just inside each boundary of the mask with the w just outside
// it, so that every edge near a boundary is moved the harmful way.
const AttackAdaptiveRotate = "adaptive-rotate"

// Default strengths of the dense attacks.
const (
	// DefaultFlipScale makes a sign-flipping attacker step 10 times as far as
	// its honest training did, the other way.
	DefaultFlipScale = 10
	// DefaultNoiseSigma is the standard deviation of the noise added to every
	// weight, about 20 times the spread of the initial first-layer weights.
	DefaultNoiseSigma = 1
	// DefaultScale is the FRL reference's scaling attack against FedAvg: its
	// attackers upload 100000 times the global model as their update (the
	// reference's updates are differences from the global model).
	DefaultScale = 100000
	// DefaultBoost makes a boosting attacker step 10 times as far as its
	// honest training did, the same way.
	DefaultBoost = 10
)

// Perturbation directions of the min-max and min-sum attacks (Poison.Deviation):
// the malicious update is the benign mean plus gamma times one of them.
const (
	DeviationUnit = "unit" // minus the unit vector of the mean benign step (mean - global); the default, as in the paper's code
	DeviationStd  = "std"  // minus the coordinate-wise standard deviation of the benign updates (the FRL reference's tailored attacks use it)
	DeviationSign = "sign" // minus the sign of the mean benign step
)

// ErrAttackKind is returned (wrapped) by Poison for an attack that does not
// apply to the task's updates.
var ErrAttackKind = errors.New("attack does not apply to this task's updates")

// Poison is what an attacker's forged update is made from.
type Poison struct {
	Attack string // one of the Attack names but AttackLabelFlip
	// Job is the attacker's own job: round, global model, and the seed of its
	// random draws. A collective attack (reverse, adaptive, minmax, minsum)
	// uses only its round and model, so that every attacker of the round
	// sends the same update.
	Job Job
	// Honest holds honestly trained updates: for the collective attacks
	// those of the attacker clients trained to estimate the honest direction
	// (the FRL reference trains min(attackers, per-round) of them), for
	// AttackSignFlip, AttackNoise and AttackBoost the attacker's own (one).
	// AttackRandom and AttackScale need none.
	Honest [][]byte
	// Scale is the factor of AttackSignFlip, AttackScale and AttackBoost;
	// 0 means DefaultFlipScale, DefaultScale, DefaultBoost.
	Scale float64
	Sigma float64 // AttackNoise; 0 means DefaultNoiseSigma
	// Deviation is the perturbation of AttackMinMax and AttackMinSum: one
	// of the Deviation names; "" means DeviationUnit.
	Deviation string
	// Attackers and Voters are the round's attackers (all of them send this
	// update) and selected peers, for AttackAdaptive: the larger the
	// attackers' share, the less far each edge must move. 0 means 1
	// attacker among 5 voters.
	Attackers, Voters int
	// Target is the fraction of its estimate of the vote-robust distance
	// limit that AttackAdaptive aims at; 0 means DefaultAdaptiveTarget.
	Target float64
	// Index is the attacker's place among the round's Attackers (0-based),
	// and Group how many of them move each edge, for AttackAdaptiveSplit
	// (0 means 1: each edge is moved by one attacker).
	Index, Group int
	// Noise is the share of the distance budget AttackAdaptiveNoise spends
	// on each attacker's own moves; 0 means DefaultAdaptiveNoise.
	Noise float64
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
	_ Attackable = (*LoRA)(nil)
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

// Poison implements Attackable for AttackReverse, AttackRandom and
// AttackAdaptive.
func (t *FRL) Poison(p Poison) ([]byte, error) {
	layers := t.spec.Layers()
	order := make([][]uint32, len(layers))
	switch p.Attack {
	case AttackReverse:
		vote := rankvote.NewVote(layers)
		if err := t.decodeHonest(p, func(r [][]uint32) error { return vote.Add(r) }); err != nil {
			return nil, err
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
	case AttackAdaptive, AttackAdaptiveSplit, AttackAdaptiveNoise, AttackAdaptiveRotate:
		a, err := t.Adaptive(p)
		if err != nil {
			return nil, err
		}
		order = a.Order
	default:
		return nil, fmt.Errorf("task %s: %q: %w (%s; have: %s, %s, %s, %s)", t.cfg.Name, p.Attack, ErrAttackKind,
			Rankings, AttackReverse, AttackRandom, AttackAdaptive, AttackLabelFlip)
	}
	// In the federation's codec: the aggregator takes no other format.
	var ref [][]uint32
	if t.codec != CodecPacked {
		var err error
		if ref, err = t.spec.DecodeFRLModel(p.Job.Model, nil); err != nil {
			return nil, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
		}
	}
	return t.encodeRanking(order, ref, nil, nil), nil
}

// decodeHonest decodes p.Honest, at least one update, and hands each to add
// (the slices are reused between calls).
func (t *FRL) decodeHonest(p Poison, add func(r [][]uint32) error) error {
	if len(p.Honest) == 0 {
		return fmt.Errorf("task %s: %s needs honestly trained updates of attacker clients", t.cfg.Name, p.Attack)
	}
	var ref [][]uint32 // the global rankings, for delta-coded updates
	if t.codec != CodecPacked {
		var err error
		if ref, err = t.spec.DecodeFRLModel(p.Job.Model, nil); err != nil {
			return fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
		}
	}
	var r [][]uint32
	var c rankvote.DeltaCoder
	for i, h := range p.Honest {
		var err error
		if r, err = t.spec.DecodeFRLUpdateAgainst(h, r, ref, &c); err != nil {
			return fmt.Errorf("task %s: %s: honest update %d: %w", t.cfg.Name, p.Attack, i, err)
		}
		if err := add(r); err != nil {
			return fmt.Errorf("task %s: %s: honest update %d: %w", t.cfg.Name, p.Attack, i, err)
		}
	}
	return nil
}

// UpdateKind implements Attackable.
func (t *Dense) UpdateKind() UpdateKind { return Weights }

// Poison implements Attackable for AttackSignFlip, AttackNoise, AttackScale,
// AttackBoost, AttackMinMax and AttackMinSum. Weights that would overflow
// float32 are clamped to ±math.MaxFloat32.
func (t *Dense) Poison(p Poison) ([]byte, error) {
	switch p.Attack {
	case AttackSignFlip, AttackNoise, AttackBoost:
		return t.poisonOwn(p)
	case AttackScale:
		return t.scale(p)
	case AttackMinMax, AttackMinSum:
		return t.minMax(p)
	}
	return nil, fmt.Errorf("task %s: %q: %w (%s; have: %s, %s, %s, %s, %s, %s, %s)", t.cfg.Name, p.Attack, ErrAttackKind,
		Weights, AttackSignFlip, AttackNoise, AttackScale, AttackBoost, AttackMinMax, AttackMinSum, AttackLabelFlip)
}

// poisonOwn makes the attacks on the attacker's own trained weights.
func (t *Dense) poisonOwn(p Poison) ([]byte, error) {
	if len(p.Honest) != 1 {
		return nil, fmt.Errorf("task %s: %s needs the attacker's honest update, got %d updates", t.cfg.Name, p.Attack, len(p.Honest))
	}
	w, err := t.spec.DecodeDenseUpdate(p.Honest[0], nil)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: honest update: %w", t.cfg.Name, p.Attack, err)
	}
	if p.Attack == AttackNoise {
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
		return t.spec.EncodeDenseUpdate(nil, w), nil
	}
	// signflip: global - s·(trained - global); boost: global + s·(trained - global).
	def := float64(DefaultBoost)
	if p.Attack == AttackSignFlip {
		def = DefaultFlipScale
	}
	s, err := t.scaleOf(p, def)
	if err != nil {
		return nil, err
	}
	if p.Attack == AttackSignFlip {
		s = -s
	}
	g, err := t.spec.DecodeDenseModel(p.Job.Model, nil)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
	}
	for l, layer := range w {
		for i, v := range layer {
			gv := float64(g[l][i])
			layer[i] = clampFloat32(gv + s*(float64(v)-gv))
		}
	}
	return t.spec.EncodeDenseUpdate(nil, w), nil
}

// scaleOf is p.Scale, or def when p.Scale is 0; it must be positive.
func (t *Dense) scaleOf(p Poison, def float64) (float64, error) {
	s := cmp.Or(p.Scale, def)
	if !(s > 0 && !math.IsInf(s, 1)) {
		return 0, fmt.Errorf("task %s: %s: scale %v, want > 0", t.cfg.Name, p.Attack, s)
	}
	return s, nil
}

func clampFloat32(x float64) float32 {
	return float32(min(max(x, -math.MaxFloat32), math.MaxFloat32))
}

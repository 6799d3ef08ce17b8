package task

import (
	"cmp"
	"fmt"
	"math"
)

// scale is the FRL reference's attack on FedAvg: its attackers upload, as
// their update (a difference from the global model in the reference), Scale
// times the global model, 100000 by default. Our updates are weights, so the
// attacker sends global + Scale·global. It trains nothing.
func (t *Dense) scale(p Poison) ([]byte, error) {
	s, err := t.scaleOf(p, DefaultScale)
	if err != nil {
		return nil, err
	}
	g, err := t.spec.DecodeDenseModel(p.Job.Model, nil)
	if err != nil {
		return nil, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
	}
	for _, layer := range g {
		for i, v := range layer {
			layer[i] = clampFloat32(float64(v) + s*float64(v))
		}
	}
	return t.spec.EncodeDenseUpdate(nil, g), nil
}

// MinMaxResult is what the min-max and min-sum attacks computed, for tests
// and reports.
type MinMaxResult struct {
	Weights [][]float32 // the malicious update (weights), per layer
	Gamma   float64     // how far along the perturbation it lies from the benign mean
	// Bound is the benign updates' own value of the constraint: for min-max
	// their largest squared distance to each other, for min-sum the largest
	// sum of squared distances from one of them to the others.
	Bound float64
	// Value is the malicious update's: for min-max its largest squared
	// distance to a benign update, for min-sum the sum of them. Value <= Bound.
	Value float64
}

// MinMax computes the aggregator-agnostic attacks of Shejwalkar and
// Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning Attacks
// and Defenses for Federated Learning" (NDSS 2021), from p.Honest, the benign
// updates the attackers trained (the FRL reference trains min(attackers,
// per-round) attacker clients): with their mean μ and a perturbation ∇p
// (p.Deviation: minus the unit vector of the mean step μ - global, the
// default as in the paper's code; minus their coordinate-wise standard
// deviation; or minus the sign of the mean step), the malicious update is
// μ + γ∇p with the largest γ such that
//
//   - min-max: its largest squared distance to a benign update is at most
//     the largest squared distance between two benign updates;
//   - min-sum: the sum of its squared distances to the benign updates is at
//     most the largest such sum of a benign update.
//
// Every attacker of the round sends it. Both constraints are quadratic in γ
// (||μ + γ∇p - b_i||² = ||μ - b_i||² + 2γ ∇p·(μ - b_i) + γ²||∇p||², and the
// cross terms sum to 0), so γ is solved for exactly rather than bisected as
// in the paper's code; it is then lowered, if need be, until the update
// rounded to float32 still meets the constraint. γ = 0 (the benign mean)
// always does. Distances between weights equal those between steps from the
// global model, so working on weights changes nothing.
func (t *Dense) MinMax(p Poison) (MinMaxResult, error) {
	if p.Attack != AttackMinMax && p.Attack != AttackMinSum {
		return MinMaxResult{}, fmt.Errorf("task %s: MinMax of %q: %w", t.cfg.Name, p.Attack, ErrAttackKind)
	}
	if len(p.Honest) == 0 {
		return MinMaxResult{}, fmt.Errorf("task %s: %s needs the attackers' honest updates", t.cfg.Name, p.Attack)
	}
	dev := cmp.Or(p.Deviation, DeviationUnit)
	if dev != DeviationStd && dev != DeviationUnit && dev != DeviationSign {
		return MinMaxResult{}, fmt.Errorf("task %s: %s: deviation %q, want %s, %s or %s", t.cfg.Name, p.Attack, dev, DeviationUnit, DeviationStd, DeviationSign)
	}
	g, err := t.spec.DecodeDenseModel(p.Job.Model, nil)
	if err != nil {
		return MinMaxResult{}, fmt.Errorf("task %s: %s: global model: %w", t.cfg.Name, p.Attack, err)
	}
	// Flat rows: the global model and each benign update.
	sizes := t.spec.Layers()
	total := 0
	for _, n := range sizes {
		total += n
	}
	flat := func(w [][]float32) []float32 {
		out := make([]float32, 0, total)
		for _, l := range w {
			out = append(out, l...)
		}
		return out
	}
	global := flat(g)
	benign := make([][]float32, len(p.Honest))
	var buf [][]float32
	for i, h := range p.Honest {
		if buf, err = t.spec.DecodeDenseUpdate(h, buf); err != nil {
			return MinMaxResult{}, fmt.Errorf("task %s: %s: honest update %d: %w", t.cfg.Name, p.Attack, i, err)
		}
		benign[i] = flat(buf)
	}
	k := len(benign)

	mean := make([]float64, total)
	for _, b := range benign {
		for c, v := range b {
			mean[c] += float64(v)
		}
	}
	for c := range mean {
		mean[c] /= float64(k)
	}
	pert := make([]float64, total)
	switch dev {
	case DeviationStd:
		if k > 1 {
			for c := range pert {
				var ss float64
				for _, b := range benign {
					d := float64(b[c]) - mean[c]
					ss += d * d
				}
				pert[c] = -math.Sqrt(ss / float64(k-1)) // unbiased, as torch.std
			}
		}
	case DeviationUnit:
		var norm float64
		for c := range pert {
			pert[c] = mean[c] - float64(global[c])
			norm += pert[c] * pert[c]
		}
		norm = math.Sqrt(norm)
		for c := range pert {
			if norm > 0 {
				pert[c] /= -norm
			} else {
				pert[c] = 0
			}
		}
	case DeviationSign:
		for c := range pert {
			switch d := mean[c] - float64(global[c]); {
			case d > 0:
				pert[c] = -1
			case d < 0:
				pert[c] = 1
			}
		}
	}

	// The benign updates' distances to each other, and to their mean.
	dist := make([]float64, k*k)
	for i := range k {
		for j := i + 1; j < k; j++ {
			d := sqDist32(benign[i], benign[j])
			dist[i*k+j], dist[j*k+i] = d, d
		}
	}
	var bound float64
	if p.Attack == AttackMinMax {
		bound = maxOf(dist)
	} else {
		for i := range k {
			var s float64
			for j := range k {
				s += dist[i*k+j]
			}
			bound = max(bound, s)
		}
	}
	var a float64 // ||∇p||²
	for _, v := range pert {
		a += v * v
	}
	c := make([]float64, k)    // ||μ - b_i||²
	beta := make([]float64, k) // ∇p·(μ - b_i)
	for i, b := range benign {
		for j, v := range b {
			d := mean[j] - float64(v)
			c[i] += d * d
			beta[i] += pert[j] * d
		}
	}
	gamma := 0.0
	if a > 0 {
		if p.Attack == AttackMinMax {
			gamma = math.Inf(1)
			for i := range k {
				// The larger root of aγ² + 2β_iγ + c_i - bound = 0; c_i <=
				// bound (the mean is no farther from a benign update than the
				// farthest other one), so it is >= 0.
				r := (-beta[i] + math.Sqrt(beta[i]*beta[i]+a*max(bound-c[i], 0))) / a
				gamma = min(gamma, r)
			}
		} else {
			var s0 float64
			for _, v := range c {
				s0 += v
			}
			gamma = math.Sqrt(max(bound-s0, 0) / (float64(k) * a))
		}
	}
	mal := make([]float32, total)
	value := func() float64 {
		for j := range mal {
			mal[j] = clampFloat32(mean[j] + gamma*pert[j])
		}
		var v float64
		for _, b := range benign {
			d := sqDist32(mal, b)
			if p.Attack == AttackMinMax {
				v = max(v, d)
			} else {
				v += d
			}
		}
		return v
	}
	v := value()
	// Rounding to float32 may cross a bound met exactly in float64.
	for step := 1e-9; v > bound && gamma > 0; step *= 4 {
		gamma *= 1 - min(step, 1)
		v = value()
	}
	w := make([][]float32, len(sizes))
	off := 0
	for l, n := range sizes {
		w[l] = mal[off : off+n]
		off += n
	}
	return MinMaxResult{Weights: w, Gamma: gamma, Bound: bound, Value: v}, nil
}

func (t *Dense) minMax(p Poison) ([]byte, error) {
	r, err := t.MinMax(p)
	if err != nil {
		return nil, err
	}
	return t.spec.EncodeDenseUpdate(nil, r.Weights), nil
}

func maxOf(s []float64) float64 {
	m := 0.0
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// sqDist32 is the squared Euclidean distance of two equally long float32
// vectors, in float64.
func sqDist32(a, b []float32) float64 {
	b = b[:len(a)]
	var s0, s1 float64
	i := 0
	for ; i+2 <= len(a); i += 2 {
		d0 := float64(a[i]) - float64(b[i])
		d1 := float64(a[i+1]) - float64(b[i+1])
		s0 += d0 * d0
		s1 += d1 * d1
	}
	for ; i < len(a); i++ {
		d := float64(a[i]) - float64(b[i])
		s0 += d * d
	}
	return s0 + s1
}

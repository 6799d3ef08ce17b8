package task

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedrank/fedrank/rankvote"
)

// trainedBy returns the honest updates of clients 0..n-1 from tk's initial model.
func trainedBy(t *testing.T, tk Attackable, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for c := range n {
		p, err := tk.Train(jobOf(tk, c))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestDenseScaleAndBoost(t *testing.T) {
	tk := smallDense(t)
	job := jobOf(tk, 1)
	honest := trainedBy(t, tk, 2)[1]
	g, _ := tk.Spec().DecodeDenseModel(job.Model, nil)
	h, _ := tk.Spec().DecodeDenseUpdate(honest, nil)
	for _, tc := range []struct {
		p    Poison
		want func(g, h float64) float64
	}{
		// The reference's scaling attack: the update is 100000 × the global model.
		{Poison{Attack: AttackScale, Job: job}, func(g, _ float64) float64 { return g + 100000*g }},
		{Poison{Attack: AttackScale, Job: job, Scale: 3}, func(g, _ float64) float64 { return g + 3*g }},
		{Poison{Attack: AttackBoost, Job: job, Honest: [][]byte{honest}}, func(g, h float64) float64 { return g + 10*(h-g) }},
		{Poison{Attack: AttackBoost, Job: job, Honest: [][]byte{honest}, Scale: 2.5}, func(g, h float64) float64 { return g + 2.5*(h-g) }},
	} {
		out, err := tk.Poison(tc.p)
		if err != nil {
			t.Fatal(err)
		}
		w, err := tk.Spec().DecodeDenseUpdate(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		for l := range w {
			if len(w[l]) != len(g[l]) {
				t.Fatalf("%s: layer %d has %d weights, want %d", tc.p.Attack, l, len(w[l]), len(g[l]))
			}
			for i := range w[l] {
				if want := float32(tc.want(float64(g[l][i]), float64(h[l][i]))); w[l][i] != want {
					t.Fatalf("%s x%v: layer %d weight %d: %v, want %v", tc.p.Attack, tc.p.Scale, l, i, w[l][i], want)
				}
			}
		}
		acceptedByAll(t, tk, out, honest)
	}
	for _, p := range []Poison{
		{Attack: AttackScale, Job: job, Scale: -1},
		{Attack: AttackScale, Job: Job{Model: []byte("junk")}},
		{Attack: AttackBoost, Job: job},
		{Attack: AttackBoost, Job: job, Honest: [][]byte{honest}, Scale: math.Inf(1)},
	} {
		if _, err := tk.Poison(p); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

// flatDense decodes a dense update into one row.
func flatDense(t *testing.T, tk *Dense, b []byte) []float64 {
	t.Helper()
	w, err := tk.Spec().DecodeDenseUpdate(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, l := range w {
		for _, v := range l {
			out = append(out, float64(v))
		}
	}
	return out
}

func sqDist64(a, b []float64) float64 {
	var s float64
	for i := range a {
		d := a[i] - b[i]
		s += d * d
	}
	return s
}

func TestDenseMinMaxAndMinSum(t *testing.T) {
	tk := smallDense(t)
	honest := trainedBy(t, tk, 4)
	job := jobOf(tk, 0)
	g, _ := tk.Spec().DecodeDenseModel(job.Model, nil)
	global := slices.Concat(g...)
	benign := make([][]float64, len(honest))
	mean := make([]float64, len(global))
	for i, h := range honest {
		benign[i] = flatDense(t, tk, h)
		for c, v := range benign[i] {
			mean[c] += v / float64(len(honest))
		}
	}
	// The benign updates' own bounds, computed here from scratch.
	var maxPair, maxSum float64
	for i := range benign {
		var s float64
		for j := range benign {
			d := sqDist64(benign[i], benign[j])
			maxPair = max(maxPair, d)
			s += d
		}
		maxSum = max(maxSum, s)
	}
	for _, attack := range []string{AttackMinMax, AttackMinSum} {
		for _, dev := range []string{"", DeviationUnit, DeviationStd, DeviationSign} {
			p := Poison{Attack: attack, Job: job, Honest: honest, Deviation: dev}
			r, err := tk.MinMax(p)
			if err != nil {
				t.Fatal(err)
			}
			out, err := tk.Poison(p)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := tk.Poison(p); !bytes.Equal(out, again) {
				t.Fatalf("%s/%s: not deterministic", attack, dev)
			}
			mal := flatDense(t, tk, out)
			if len(mal) != len(global) {
				t.Fatalf("%s/%s: %d weights, want %d", attack, dev, len(mal), len(global))
			}
			var worst, sum float64
			for _, b := range benign {
				d := sqDist64(mal, b)
				worst = max(worst, d)
				sum += d
			}
			bound, value := maxPair, worst
			if attack == AttackMinSum {
				bound, value = maxSum, sum
			}
			if math.Abs(bound-r.Bound) > 1e-9*bound || math.Abs(value-r.Value) > 1e-9*bound {
				t.Errorf("%s/%s: reported bound %v value %v, computed %v %v", attack, dev, r.Bound, r.Value, bound, value)
			}
			if !(r.Gamma > 0) || value > bound {
				t.Errorf("%s/%s: gamma %v, value %v over bound %v", attack, dev, r.Gamma, value, bound)
			}
			// The largest gamma: the constraint is met with (almost) no room left.
			if value < bound*(1-1e-4) {
				t.Errorf("%s/%s: value %v well under bound %v: gamma %v is not the largest", attack, dev, value, bound, r.Gamma)
			}
			// The update lies along the perturbation, which opposes the benign step.
			var along float64
			for c := range mal {
				along += (mal[c] - mean[c]) * (mean[c] - float64(global[c]))
			}
			if dev != DeviationStd {
				if !(along < 0) {
					t.Errorf("%s/%s: the update does not oppose the mean benign step (%v)", attack, dev, along)
				}
			}
			if dev == DeviationSign {
				for c := range mal {
					step := mean[c] - float64(global[c])
					if step != 0 && (mal[c]-mean[c])*step > 1e-6*math.Abs(step) {
						t.Fatalf("%s/sign: weight %d moved with the benign step", attack, c)
					}
				}
			}
			acceptedByAll(t, tk, out)
		}
	}
	// One benign update: the bounds are 0 and the attackers send it.
	r, err := tk.MinMax(Poison{Attack: AttackMinMax, Job: job, Honest: honest[:1]})
	if err != nil || r.Gamma != 0 || r.Value != 0 {
		t.Errorf("one benign update: gamma %v value %v (%v)", r.Gamma, r.Value, err)
	}
	for _, p := range []Poison{
		{Attack: AttackMinMax, Job: job},
		{Attack: AttackMinSum, Job: job, Honest: honest, Deviation: "bogus"},
		{Attack: AttackMinSum, Job: job, Honest: [][]byte{[]byte("junk")}},
		{Attack: AttackMinMax, Job: Job{Model: []byte("junk")}, Honest: honest},
	} {
		if _, err := tk.Poison(p); err == nil {
			t.Errorf("%+v accepted", p.Deviation)
		}
	}
	if _, err := tk.MinMax(Poison{Attack: AttackScale}); !errors.Is(err, ErrAttackKind) {
		t.Errorf("MinMax of scale: %v", err)
	}
}

// footruleDistance is FilteredVote's distance of ranking r to ranking c.
func footruleDistance(r, c [][]uint32) float64 {
	var d float64
	layers := 0
	for l := range r {
		n := len(r[l])
		if n < 2 {
			continue
		}
		pos := make([]uint32, n)
		for i, e := range c[l] {
			pos[e] = uint32(i)
		}
		var f float64
		for i, e := range r[l] {
			f += math.Abs(float64(i) - float64(pos[e]))
		}
		d += f / float64(n*n/2)
		layers++
	}
	return d / float64(layers)
}

func TestFRLAdaptive(t *testing.T) {
	tk := smallFRL(t)
	honest := trainedBy(t, tk, 4)
	p := Poison{Attack: AttackAdaptive, Job: jobOf(tk, 0), Honest: honest, Attackers: 2, Voters: 8}
	r, err := tk.Adaptive(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tk.Poison(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Spec().DecodeFRLUpdate(out, nil) // checks every layer is a permutation
	if err != nil {
		t.Fatal(err)
	}
	for l, n := range tk.Spec().Layers() {
		if !slices.Equal(got[l], r.Order[l]) || len(got[l]) != n {
			t.Fatalf("layer %d: the payload is not the crafted ranking of %d edges", l, n)
		}
	}
	if again, _ := tk.Poison(p); !bytes.Equal(out, again) {
		t.Error("not deterministic")
	}
	acceptedByAll(t, tk, out)

	// The consensus is the median-position vote of the trained rankings.
	med := rankvote.NewTrimmedVote(tk.Spec().Layers(), 0.5)
	for _, h := range honest {
		rk, _ := tk.Spec().DecodeFRLUpdate(h, nil)
		if err := med.Add(rk); err != nil {
			t.Fatal(err)
		}
	}
	for l := range r.Consensus {
		if !slices.Equal(r.Consensus[l], med.Result(l, nil)) {
			t.Fatalf("layer %d: consensus is not the trained rankings' median-position vote", l)
		}
	}
	// Within the estimated limit: the footrule distance, computed here, is
	// at most Target = 0.75 × Limit.
	d := footruleDistance(got, r.Consensus)
	if math.Abs(d-r.Distance) > 1e-12 || d > r.Target || r.Target != DefaultAdaptiveTarget*r.Limit || !(r.Limit > 0) {
		t.Errorf("distance %v (reported %v), target %v, limit %v", d, r.Distance, r.Target, r.Limit)
	}
	// It moves edges across the mask's boundaries: the mask of the crafted
	// ranking differs from the consensus's.
	moved, flips := 0, 0
	for l := range got {
		moved += r.Moved[l]
		if r.Moved[l] > r.Candidates[l] {
			t.Errorf("layer %d: moved %d of %d candidates", l, r.Moved[l], r.Candidates[l])
		}
		on := tk.net.Layers[l].On
		inCons := make([]bool, len(on))
		for i, e := range r.Consensus[l] {
			inCons[e] = on[i]
		}
		for i, e := range got[l] {
			if on[i] != inCons[e] {
				flips++
			}
		}
	}
	if moved == 0 || flips == 0 {
		t.Errorf("moved %v edges, %d change sides of the mask", r.Moved, flips)
	}
	// A larger target allows more; a tiny one leaves the consensus.
	wide := p
	wide.Target = 3
	if rw, err := tk.Adaptive(wide); err != nil || rw.Distance < r.Distance || rw.Distance > rw.Target {
		t.Errorf("target 3: distance %v (target %v), was %v (%v)", rw.Distance, rw.Target, r.Distance, err)
	}
	tiny := p
	tiny.Target = 1e-12
	if rt, err := tk.Adaptive(tiny); err != nil || footruleDistance(rt.Order, rt.Consensus) != 0 {
		t.Errorf("tiny target: distance %v (%v)", rt.Distance, err)
	}
	for _, bad := range []Poison{
		{Attack: AttackAdaptive, Job: jobOf(tk, 0)},
		{Attack: AttackAdaptive, Job: jobOf(tk, 0), Honest: honest, Target: -1},
		{Attack: AttackAdaptive, Job: Job{Model: []byte("junk")}, Honest: honest},
		{Attack: AttackAdaptive, Job: jobOf(tk, 0), Honest: [][]byte{[]byte("junk")}},
	} {
		if _, err := tk.Poison(bad); err == nil {
			t.Errorf("%+v accepted", bad.Target)
		}
	}
}

func TestAdaptiveMovesHandComputed(t *testing.T) {
	// 8 edges, consensus the identity; the mask keeps positions 0, 1, 6, 7
	// (lo = 2, hi = 6). Reach 2 (k/m: 1 attacker of 2 voters).
	//   e0 kept, gains 1, offset 1: moves +(2-0)·2 = 4 to 4, ratio 1·32/8 = 4
	//   e1 kept, gains 2, offset 0: +2 to 3, ratio 2·32/4 = 16
	//   e2 unkept, loses 1, nearest lo: -(0+1)·2 to 0, ratio 8
	//   e3 unkept, gains: not a candidate; e4 no change: not one
	//   e5 unkept, loses 3, nearest hi: +(6-5)·2 to 7, ratio 24
	//   e6 kept, gains 1, offset 0: -2 to 4, ratio 8
	//   e7 kept, loses: not one
	on := []bool{true, true, false, false, false, false, true, true}
	b := newBoundaryLayer([]uint32{0, 1, 2, 3, 4, 5, 6, 7}, on)
	if b.lo != 2 || b.hi != 6 {
		t.Fatalf("boundaries %d %d, want 2 6", b.lo, b.hi)
	}
	gain := []float64{1, 2, -1, 1, 0, -3, 1, -1}
	cands := b.candidates(nil, 0, gain, 2)
	type ct struct {
		edge  uint32
		to    float64
		ratio float64
	}
	var got []ct
	for _, c := range cands {
		got = append(got, ct{c.edge, c.to, c.ratio})
	}
	want := []ct{{0, 4, 4}, {1, 3, 16}, {2, 0, 8}, {5, 7, 24}, {6, 4, 8}}
	if !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
	// Ranked: e5 (24), e1 (16), e2 (8), e6 (8), e0 (4), ties in the order
	// of the consensus. All moved, by where they go: e2 (0), e1 (3), e0 (4),
	// e6 (4), e5 (7); the others keep their order: [2 3 1 4 0 6 7 5].
	// Footrule 2+2+1+1+4+1+1+2 = 14.
	other := newBoundaryLayer([]uint32{1, 0}, []bool{true, false})
	st := []boundaryLayer{b, other}
	rankCandidates(cands, st)
	b = st[0]
	var ranks []int
	for _, c := range b.cands {
		ranks = append(ranks, c.rank)
	}
	if !slices.Equal(ranks, []int{2, 1, 4, 3, 0}) {
		t.Fatalf("ranks by destination %v", ranks)
	}
	order := b.move(nil, 5)
	if !slices.Equal(order, []uint32{2, 3, 1, 4, 0, 6, 7, 5}) {
		t.Fatalf("order %v", order)
	}
	if f := rankvote.Footrule(order, b.pos); f != 14 {
		t.Errorf("footrule %d, want 14", f)
	}
	// Only the best, e5: [0 1 2 3 4 6 7 5]; the scratch is reset between calls.
	if order := b.move(nil, 1); !slices.Equal(order, []uint32{0, 1, 2, 3, 4, 6, 7, 5}) {
		t.Errorf("order %v", order)
	}
	if order := b.move(nil, 0); !slices.Equal(order, b.cons) {
		t.Errorf("order %v", order)
	}
	if len(st[1].cands) != 0 || !slices.Equal(st[1].move(nil, 5), []uint32{1, 0}) {
		t.Errorf("another layer got candidates")
	}
}

func TestEstimateLimit(t *testing.T) {
	// Honest distances 0.1 .. 0.2 evenly: alone their Hampel limit is
	// 0.15 + 2.9652 × 0.03 = 0.2390 (median 0.15, MAD 0.03). With 2 attackers of 10 at x, the
	// estimate is the largest x that is not above the limit of the 8
	// quantiles and x twice.
	d := []float64{0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.20}
	if l := rankvote.HampelLimit(d); math.Abs(l-(0.15+rankvote.HampelK*0.03)) > 1e-12 {
		t.Fatalf("HampelLimit %v", l)
	}
	x := estimateLimit(d, 2, 10)
	all := []float64{x, x}
	for j := range 8 {
		all = append(all, quantile(d, (float64(j)+0.5)/8))
	}
	if lim := rankvote.HampelLimit(all); x > lim+1e-12 || x < lim-1e-6 {
		t.Errorf("estimate %v, the limit with it %v", x, lim)
	}
	if x <= rankvote.HampelLimit(d) {
		t.Errorf("estimate %v not above the honest limit %v: the attackers raise the median", x, rankvote.HampelLimit(d))
	}
	if estimateLimit(nil, 1, 5) != 0 {
		t.Error("no distances: want 0")
	}
}

// maskOf is, per layer, whether each edge is in the mask of ranking r.
func (t *FRL) maskOf(r [][]uint32) [][]bool {
	out := make([][]bool, len(r))
	for l, order := range r {
		on := t.net.Layers[l].On
		out[l] = make([]bool, len(order))
		for i, e := range order {
			out[l][e] = on[i]
		}
	}
	return out
}

func TestFRLAdaptiveSplit(t *testing.T) {
	tk := smallFRL(t)
	honest := trainedBy(t, tk, 4)
	const m = 3
	base := Poison{Attack: AttackAdaptive, Job: jobOf(tk, 0), Honest: honest, Attackers: m, Voters: 8}
	whole, err := tk.Adaptive(base)
	if err != nil {
		t.Fatal(err)
	}
	// Each edge moved by all m attackers is the adaptive attack.
	p := base
	p.Attack, p.Group = AttackAdaptiveSplit, m
	for i := range m {
		p.Index = i
		r, err := tk.Adaptive(p)
		if err != nil {
			t.Fatal(err)
		}
		for l := range r.Order {
			if !slices.Equal(r.Order[l], whole.Order[l]) {
				t.Fatalf("group %d, attacker %d: layer %d differs from adaptive", m, i, l)
			}
		}
	}
	// Each edge moved by one: the attackers' rankings differ, each within
	// the target, and each a valid update.
	p.Group = 1
	var outs [][]byte
	for i := range m {
		p.Index = i
		r, err := tk.Adaptive(p)
		if err != nil {
			t.Fatal(err)
		}
		if d := footruleDistance(r.Order, r.Consensus); d > r.Target || math.Abs(d-r.Distance) > 1e-12 {
			t.Errorf("attacker %d: distance %v, target %v", i, d, r.Target)
		}
		if slices.Equal(r.Moved, make([]int, len(r.Moved))) {
			t.Errorf("attacker %d moved nothing", i)
		}
		out, err := tk.Poison(p)
		if err != nil {
			t.Fatal(err)
		}
		acceptedByAll(t, tk, out)
		for j, o := range outs {
			if bytes.Equal(o, out) {
				t.Errorf("attackers %d and %d send the same ranking", j, i)
			}
		}
		outs = append(outs, out)
	}
	p.Index = m
	if _, err := tk.Adaptive(p); err == nil {
		t.Error("attacker index m accepted")
	}
}

func TestFRLAdaptiveNoise(t *testing.T) {
	tk := smallFRL(t)
	honest := trainedBy(t, tk, 4)
	const m = 3
	p := Poison{Attack: AttackAdaptiveNoise, Job: jobOf(tk, 0), Honest: honest, Attackers: m, Voters: 8, Noise: 0.5}
	// The shared moves: the adaptive attack on half the budget.
	shared, err := tk.Adaptive(Poison{Attack: AttackAdaptive, Job: p.Job, Honest: honest, Attackers: m, Voters: 8, Target: 0.5 * DefaultAdaptiveTarget})
	if err != nil {
		t.Fatal(err)
	}
	want := tk.maskOf(shared.Order)
	var orders [][][]uint32
	for i := range m {
		p.Index = i
		r, err := tk.Adaptive(p)
		if err != nil {
			t.Fatal(err)
		}
		if d := footruleDistance(r.Order, r.Consensus); d > r.Target || math.Abs(d-r.Distance) > 1e-12 || d <= shared.Distance {
			t.Errorf("attacker %d: distance %v, target %v, shared moves alone %v", i, d, r.Target, shared.Distance)
		}
		// Its own moves stay inside the unkept middle: the mask is the
		// shared moves' mask.
		got := tk.maskOf(r.Order)
		for l := range got {
			if !slices.Equal(got[l], want[l]) {
				t.Errorf("attacker %d, layer %d: own moves changed the mask", i, l)
			}
		}
		for j, o := range orders {
			if slices.EqualFunc(o, r.Order, slices.Equal) {
				t.Errorf("attackers %d and %d send the same ranking", j, i)
			}
		}
		orders = append(orders, r.Order)
		out, err := tk.Poison(p)
		if err != nil {
			t.Fatal(err)
		}
		acceptedByAll(t, tk, out)
	}
	for _, q := range []float64{-1, 1, 2} {
		bad := p
		bad.Noise = q
		if _, err := tk.Adaptive(bad); err == nil {
			t.Errorf("noise share %v accepted", q)
		}
	}
}

func TestFRLAdaptiveRotate(t *testing.T) {
	tk := smallFRL(t)
	honest := trainedBy(t, tk, 4)
	p := Poison{Attack: AttackAdaptiveRotate, Job: jobOf(tk, 0), Honest: honest, Attackers: 2, Voters: 8}
	r, err := tk.Adaptive(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := footruleDistance(r.Order, r.Consensus); d > r.Target || math.Abs(d-r.Distance) > 1e-12 || d == 0 {
		t.Errorf("distance %v (reported %v), target %v", d, r.Distance, r.Target)
	}
	// Every edge that moves moves w positions across a boundary of the
	// mask, and as many leave the mask as enter it.
	flips := 0
	for l, order := range r.Order {
		on := tk.net.Layers[l].On
		pos := make([]int, len(order))
		for i, e := range r.Consensus[l] {
			pos[e] = i
		}
		w, in, out := 0, 0, 0
		for i, e := range order {
			d := i - pos[e]
			if d == 0 {
				continue
			}
			if w == 0 {
				w = max(d, -d)
			}
			if max(d, -d) != w || on[i] == on[pos[e]] {
				t.Fatalf("layer %d: edge %d moved from %d to %d (w %d): not across a boundary by w", l, e, pos[e], i, w)
			}
			if on[i] {
				in++
			} else {
				out++
			}
		}
		if in != out {
			t.Errorf("layer %d: %d edges enter the mask, %d leave", l, in, out)
		}
		flips += in + out
	}
	if flips == 0 {
		t.Error("no edge crosses a boundary")
	}
	out, err := tk.Poison(p)
	if err != nil {
		t.Fatal(err)
	}
	acceptedByAll(t, tk, out)
	tiny := p
	tiny.Target = 1e-12
	if rt, err := tk.Adaptive(tiny); err != nil || footruleDistance(rt.Order, rt.Consensus) != 0 {
		t.Errorf("tiny target: distance %v (%v)", rt.Distance, err)
	}
}

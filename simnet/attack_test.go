package simnet

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
)

// smallData is a synthetic 3-class problem on 4x4 images, 10 images per client.
func smallData(t *testing.T, clients int) task.Data {
	t.Helper()
	n := 10 * clients
	rng := rand.New(rand.NewPCG(5, 6))
	set := &data.Set{N: n, Rows: 4, Cols: 4, Classes: 3, Pixels: make([]uint8, n*16), Labels: make([]uint8, n)}
	for k := range n {
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
	parts := make(data.Partition, clients)
	for c := range parts {
		for k := range 10 {
			parts[c] = append(parts[c], c*10+k)
		}
	}
	return task.Data{Train: in, Test: in, Parts: parts}
}

// smallTasks builds a tiny FRL and a tiny dense task (16-8-3 networks).
func smallTasks(t *testing.T, clients int) []task.Attackable {
	t.Helper()
	fc := task.DefaultFRL(3)
	fc.Name, fc.Sizes = "frl-small", []int{16, 8, 3}
	frl, err := task.NewFRL(fc, smallData(t, clients))
	if err != nil {
		t.Fatal(err)
	}
	dc := task.DefaultFedAvg(3)
	dc.Name, dc.Sizes = "dense-small", []int{16, 8, 3}
	dense, err := task.NewDense(dc, smallData(t, clients))
	if err != nil {
		t.Fatal(err)
	}
	return []task.Attackable{frl, dense}
}

func attackConfig(attack string, attackers float64) Config {
	cfg := testConfig()
	cfg.Scenario, cfg.Peers, cfg.PerRound, cfg.Rounds = "small", 20, 8, 3
	cfg.Attack, cfg.Attackers = attack, attackers
	return cfg
}

func members(n int) []node.PeerID {
	m := make([]node.PeerID, n)
	for i := range m {
		m[i] = peerID(i)
	}
	return m
}

func TestAttackerSelection(t *testing.T) {
	tk := smallTasks(t, 30)[0]
	cfg := attackConfig(task.AttackRandom, 0.45) // 13 of 30 attack
	cfg.Peers, cfg.PerRound = 30, 10
	ms := members(cfg.Peers)
	a, err := newAttack(cfg, tk, ms, 99)
	if err != nil {
		t.Fatal(err)
	}
	if a.attackers != 13 || !a.isAttacker("peer-0012") || a.isAttacker("peer-0013") || a.isAttacker("aggregator") {
		t.Fatalf("attackers %d: want peers 0..12", a.attackers)
	}
	redrawn := 0
	for r := uint64(1); r <= 300; r++ {
		sel := a.selectPeers(r, ms, cfg.PerRound, 99)
		if again := a.selectPeers(r, ms, cfg.PerRound, 99); !slices.Equal(sel, again) {
			t.Fatalf("round %d: selection not deterministic", r)
		}
		bad := 0
		for _, p := range sel {
			if a.isAttacker(p) {
				bad++
			}
		}
		if len(sel) != cfg.PerRound || 2*bad >= cfg.PerRound {
			t.Fatalf("round %d: %d attackers among %d selected", r, bad, len(sel))
		}
		if uniform := node.SelectUniform(r, ms, cfg.PerRound, 99); !slices.Equal(sel, uniform) {
			redrawn++
		}
	}
	// With 13 of 30, about a third of uniform draws of 10 have 5 or more.
	if redrawn < 30 || redrawn > 200 {
		t.Errorf("%d of 300 selections redrawn", redrawn)
	}
}

func TestAttackersCanNeverBeAMajority(t *testing.T) {
	// Tight cases: the only honest-majority draws are rare or unique.
	tk := smallTasks(t, 5)[0]
	for _, tc := range []struct {
		peers, perRound int
		frac            float64
	}{{5, 5, 0.4}, {5, 3, 0.4}, {5, 4, 0.4}, {3, 2, 0.34}} {
		cfg := attackConfig(task.AttackRandom, tc.frac)
		cfg.Peers, cfg.PerRound = tc.peers, tc.perRound
		ms := members(tc.peers)
		a, err := newAttack(cfg, tk, ms, 7)
		if err != nil {
			t.Fatal(err)
		}
		for r := uint64(1); r <= 50; r++ {
			bad := 0
			for _, p := range a.selectPeers(r, ms, tc.perRound, 7) {
				if a.isAttacker(p) {
					bad++
				}
			}
			if 2*bad >= tc.perRound {
				t.Fatalf("%+v round %d: %d attackers", tc, r, bad)
			}
		}
	}
}

// TestEveryAttackIsAccepted runs every attack that fits each small task with
// every aggregator of the task: every update of every round is accepted
// (attacks lie in their content, never in their form), the run replays
// exactly whatever the number of workers, and the attack changes the model.
func TestEveryAttackIsAccepted(t *testing.T) {
	for _, tk := range smallTasks(t, 20) {
		for _, attack := range AttacksFor(tk.UpdateKind()) {
			for _, agg := range tk.Info().Aggregators {
				cfg := attackConfig(attack, 0.3)
				cfg.Aggregator = agg
				rep, err := simulate(context.Background(), cfg, tk, nil, simOptions{})
				if err != nil {
					t.Fatalf("%s/%s/%s: %v", tk.Info().Name, attack, agg, err)
				}
				for _, r := range rep.Rounds {
					if r.Accepted != r.Selected || r.Rejected != 0 {
						t.Fatalf("%s/%s/%s round %d: %d of %d accepted, %d rejected",
							tk.Info().Name, attack, agg, r.Round, r.Accepted, r.Selected, r.Rejected)
					}
				}
				if agg != tk.Info().DefaultAggregator {
					continue
				}
				one := cfg
				one.Workers = 1
				again, err := simulate(context.Background(), one, tk, nil, simOptions{})
				if err != nil || again.Model.Hash != rep.Model.Hash {
					t.Fatalf("%s/%s: replay with 1 worker differs (%v)", tk.Info().Name, attack, err)
				}
				clean := cfg
				clean.Attack, clean.Attackers = "", 0
				if honest, err := simulate(context.Background(), clean, tk, nil, simOptions{}); err != nil || honest.Model.Hash == rep.Model.Hash {
					t.Fatalf("%s/%s: the attack did not change the model (%v)", tk.Info().Name, attack, err)
				}
			}
		}
	}
}

// TestCollectiveAttackers: in a collective attack, min(attackers, per-round)
// attacker clients train honestly (the FRL reference's estimate of the
// honest direction), whether the round selected them or not, and every
// attacker of the round sends the task's poisoning of their updates, given
// the round's attackers and voters.
func TestCollectiveAttackers(t *testing.T) {
	tasks := smallTasks(t, 20)
	for _, tc := range []struct {
		tk     task.Attackable
		attack string
		poison task.Poison
	}{
		{tasks[0], task.AttackReverse, task.Poison{Attack: task.AttackReverse}},
		{tasks[0], "adaptive:0.5", task.Poison{Attack: task.AttackAdaptive, Target: 0.5}},
		{tasks[0], "adaptive-split", task.Poison{Attack: task.AttackAdaptiveSplit}},
		{tasks[0], "adaptive-noise:0.8", task.Poison{Attack: task.AttackAdaptiveNoise, Noise: 0.8}},
		{tasks[0], "adaptive-rotate", task.Poison{Attack: task.AttackAdaptiveRotate}},
		{tasks[1], task.AttackMinMax, task.Poison{Attack: task.AttackMinMax}},
		{tasks[1], "minsum:sign", task.Poison{Attack: task.AttackMinSum, Deviation: task.DeviationSign}},
	} {
		tk := tc.tk
		cfg := attackConfig(tc.attack, 0.4) // 8 of 20, 8 per round: all 8 train
		ms := members(cfg.Peers)
		a, err := newAttack(cfg, tk, ms, 5)
		if err != nil {
			t.Fatal(err)
		}
		model0, _ := tk.InitialModel()
		for round := uint64(1); round <= 3; round++ {
			var attackers []int
			for _, p := range a.selectPeers(round, ms, cfg.PerRound, 5) {
				if a.isAttacker(p) {
					attackers = append(attackers, a.clientOf[p])
				}
			}
			if len(attackers) == 0 {
				continue
			}
			job := func(c int) task.Job {
				return task.Job{Client: c, Round: round, Model: model0, Seed: trainSeed(cfg.Seed, round, c)}
			}
			trained := a.estimators(round)
			if !slices.Equal(trained, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
				t.Fatalf("%s round %d: trained %v, want all 8 attackers", tc.attack, round, trained)
			}
			var honest [][]byte
			for _, c := range trained {
				h, err := tk.Train(job(c))
				if err != nil {
					t.Fatal(err)
				}
				honest = append(honest, h)
			}
			// The variants of adaptive send every attacker its own
			// update: the poisoning with its place among the round's
			// attackers (ascending) as Index; the others one update.
			own := tc.poison.Attack == task.AttackAdaptiveSplit || tc.poison.Attack == task.AttackAdaptiveNoise
			wants := make([][]byte, len(attackers))
			for i := range attackers {
				p := tc.poison
				p.Job, p.Honest, p.Attackers, p.Voters = job(attackers[0]), honest, len(attackers), cfg.PerRound
				if own {
					p.Index = i
				}
				w, err := tk.Poison(p)
				if err != nil {
					t.Fatal(err)
				}
				wants[i] = w
			}
			if own && len(attackers) > 1 && string(wants[0]) == string(wants[1]) {
				t.Fatalf("%s round %d: two attackers send the same update", tc.attack, round)
			}
			// All of them at once, in any order, as on the worker pool.
			got := make([][]byte, len(attackers))
			errs := make([]error, len(attackers))
			var wg sync.WaitGroup
			for i, c := range slices.Backward(attackers) {
				wg.Go(func() { got[i], errs[i] = a.behaviour().train(tk, job(c)) })
			}
			wg.Wait()
			for i := range got {
				if errs[i] != nil || string(got[i]) != string(wants[i]) {
					t.Fatalf("%s round %d attacker %d: wrong update (%v)", tc.attack, round, attackers[i], errs[i])
				}
			}
		}
		// A client the round did not select cannot join its collective.
		if _, err := a.behaviour().train(tk, task.Job{Client: 19, Round: 1, Model: model0}); err == nil {
			t.Errorf("%s: an unselected client took part in the collective attack", tc.attack)
		}
	}
}

func TestEstimators(t *testing.T) {
	tk := smallTasks(t, 30)[0]
	cfg := attackConfig(task.AttackReverse, 0.4) // 12 of 30, 5 per round
	cfg.Peers, cfg.PerRound = 30, 5
	a, err := newAttack(cfg, tk, members(cfg.Peers), 9)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for round := uint64(1); round <= 50; round++ {
		e := a.estimators(round)
		if len(e) != 5 || !slices.IsSorted(e) || len(slices.Compact(slices.Clone(e))) != 5 {
			t.Fatalf("round %d: %v, want 5 distinct attackers ascending", round, e)
		}
		if !slices.Equal(e, a.estimators(round)) {
			t.Fatalf("round %d: not deterministic", round)
		}
		for _, c := range e {
			if c < 0 || c >= 12 {
				t.Fatalf("round %d: client %d is not an attacker", round, c)
			}
			seen[c] = true
		}
	}
	if len(seen) != 12 {
		t.Errorf("50 rounds drew %d of the 12 attackers", len(seen))
	}
}

func TestAttackParameters(t *testing.T) {
	tk := smallTasks(t, 20)[1]
	model0, _ := tk.InitialModel()
	g, _ := tk.(*task.Dense).Spec().DecodeDenseModel(model0, nil)
	for _, tc := range []struct {
		attack string
		factor float64 // the update is global × factor
	}{{"scale", 100001}, {"scale:3", 4}, {"scale:0.5", 1.5}} {
		a, err := newAttack(attackConfig(tc.attack, 0.2), tk, members(20), 1)
		if err != nil {
			t.Fatal(err)
		}
		out, err := a.behaviour().train(tk, task.Job{Client: 0, Round: 1, Model: model0})
		if err != nil {
			t.Fatal(err)
		}
		w, _ := tk.(*task.Dense).Spec().DecodeDenseUpdate(out, nil)
		if want := float32(float64(g[0][3]) + (tc.factor-1)*float64(g[0][3])); w[0][3] != want {
			t.Errorf("%s: weight %v, want %v", tc.attack, w[0][3], want)
		}
	}
}

func TestResolveAttackSettings(t *testing.T) {
	for _, tc := range []struct {
		scenario, attack string
		attackers        float64
		field, msg       string // field "" = valid
	}{
		{"frl-mnist", "reverse", 0.2, "", ""},
		{"frl-mnist", "random", 0.1, "", ""},
		{"frl-mnist", "labelflip", 0.3, "", ""},
		{"frl-mnist", "adaptive", 0.2, "", ""},
		{"frl-mnist", "adaptive:0.9", 0.2, "", ""},
		{"frl-mnist", "adaptive-split", 0.2, "", ""},
		{"frl-mnist", "adaptive-split:3", 0.2, "", ""},
		{"frl-mnist", "adaptive-noise", 0.2, "", ""},
		{"frl-mnist", "adaptive-noise:0.8", 0.2, "", ""},
		{"frl-mnist", "adaptive-rotate:0.5", 0.2, "", ""},
		{"fedavg-mnist", "signflip", 0.2, "", ""},
		{"fedavg-mnist", "noise", 0.2, "", ""},
		{"fedavg-mnist", "labelflip", 0.2, "", ""},
		{"fedavg-mnist", "scale", 0.2, "", ""},
		{"fedavg-mnist", "scale:10", 0.2, "", ""},
		{"fedavg-mnist", "boost:2.5", 0.2, "", ""},
		{"fedavg-mnist", "minmax", 0.2, "", ""},
		{"fedavg-mnist", "minmax:unit", 0.2, "", ""},
		{"fedavg-mnist", "minsum:sign", 0.2, "", ""},
		{"frl-mnist", "reverse", 0, "attackers", "without a fraction of attackers"},
		{"frl-mnist", "", 0.2, "attack", "without an attack (have: reverse, random, adaptive, adaptive-split, adaptive-noise, adaptive-rotate, signflip, noise, scale, boost, minmax, minsum, labelflip)"},
		{"frl-mnist", "bogus", 0.2, "attack", `unknown attack "bogus"`},
		{"frl-mnist", "bogus:1", 0.2, "attack", `unknown attack "bogus:1"`},
		{"frl-mnist", "reverse:2", 0.2, "attack", `attack "reverse" takes no parameter`},
		{"fedavg-mnist", "scale:-1", 0.2, "attack", `attack "scale": parameter "-1", want a positive number`},
		{"fedavg-mnist", "scale:", 0.2, "attack", `attack "scale": parameter "", want a positive number`},
		{"fedavg-mnist", "minmax:mean", 0.2, "attack", `attack "minmax": parameter "mean", want unit, std or sign`},
		{"frl-mnist", "adaptive:x", 0.2, "attack", `attack "adaptive": parameter "x"`},
		{"frl-mnist", "adaptive-split:0", 0.2, "attack", `attack "adaptive-split": parameter "0", want a positive integer`},
		{"frl-mnist", "adaptive-split:1.5", 0.2, "attack", `attack "adaptive-split": parameter "1.5", want a positive integer`},
		{"frl-mnist", "adaptive-noise:1", 0.2, "attack", `attack "adaptive-noise": parameter "1", want a share in (0, 1)`},
		{"frl-mnist", "adaptive-noise:0", 0.2, "attack", `attack "adaptive-noise": parameter "0", want a share in (0, 1)`},
		{"frl-mnist", "signflip", 0.2, "attack", "updates are rankings (its attacks: reverse, random, adaptive, adaptive-split, adaptive-noise, adaptive-rotate, labelflip)"},
		{"frl-mnist", "minmax:std", 0.2, "attack", "updates are rankings (its attacks: reverse, random, adaptive, adaptive-split, adaptive-noise, adaptive-rotate, labelflip)"},
		{"fedavg-mnist", "reverse", 0.2, "attack", "updates are weights (its attacks: signflip, noise, scale, boost, minmax, minsum, labelflip)"},
		{"fedavg-mnist", "adaptive", 0.2, "attack", "updates are weights"},
		{"frl-mnist", "reverse", 0.0001, "attackers", "no attacker at all"},
		{"frl-mnist", "reverse", 0.5, "attackers", "[0, 0.5)"},
	} {
		_, _, err := Resolve(Config{Scenario: tc.scenario, Attack: tc.attack, Attackers: tc.attackers})
		var ce *ConfigError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s %s %v: %v", tc.scenario, tc.attack, tc.attackers, err)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(ce.Msg, tc.msg)):
			t.Errorf("%s %s %v: %v, want a ConfigError on %s containing %q", tc.scenario, tc.attack, tc.attackers, err, tc.field, tc.msg)
		}
	}
}

func TestAttackOnATaskWithoutAttacks(t *testing.T) {
	cfg := testConfig()
	cfg.Attack, cfg.Attackers = task.AttackRandom, 0.2
	_, err := simulate(context.Background(), cfg, &fakeTask{clients: cfg.Peers}, nil, simOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "attack" || !strings.Contains(ce.Msg, "supports no attacks") {
		t.Fatalf("err %v, want a ConfigError on attack", err)
	}
	// An attack of the wrong kind found only once the task is built.
	cfg = attackConfig(task.AttackSignFlip, 0.2)
	_, err = simulate(context.Background(), cfg, smallTasks(t, 20)[0], nil, simOptions{})
	if !errors.As(err, &ce) || ce.Field != "attack" || !strings.Contains(ce.Msg, "rankings") {
		t.Fatalf("err %v, want a ConfigError on attack", err)
	}
}

func TestAttacksListed(t *testing.T) {
	var names []string
	for _, a := range Attacks() {
		names = append(names, a.Name)
		if a.Description == "" {
			t.Errorf("%s has no description", a.Name)
		}
	}
	if got := strings.Join(names, ","); got != "reverse,random,adaptive,adaptive-split,adaptive-noise,adaptive-rotate,signflip,noise,scale,boost,minmax,minsum,labelflip" {
		t.Fatalf("attacks %s", got)
	}
	if got := AttackerCount(0.29, 100); got != 29 {
		t.Errorf("AttackerCount(0.29, 100) = %d, want 29", got)
	}
}

// The simulator counts the attackers a robust aggregator drops
// (aggregate.DropReporter), although node.Machine begins the next round in
// the step that finalizes one.
func TestDroppedAttackersReported(t *testing.T) {
	tasks := smallTasks(t, 20)
	for _, tc := range []struct {
		tk          task.Attackable
		attack, agg string
	}{
		{tasks[0], task.AttackReverse, "vote-robust"},
		{tasks[1], task.AttackScale, "multi-krum"},
	} {
		cfg := attackConfig(tc.attack, 0.3)
		cfg.Aggregator, cfg.Rounds = tc.agg, 4
		rep, err := simulate(context.Background(), cfg, tc.tk, nil, simOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dropped, attackers := 0, 0
		for _, r := range rep.Rounds {
			if r.DroppedAttackers > r.Dropped {
				t.Errorf("%s/%s round %d: %d attackers of %d dropped", tc.attack, tc.agg, r.Round, r.DroppedAttackers, r.Dropped)
			}
			if r.Round < uint64(cfg.Rounds) { // the last round begins no other
				dropped += r.Dropped
				attackers += r.DroppedAttackers
			}
		}
		if attackers == 0 {
			t.Errorf("%s/%s: no attacker dropped in rounds 1-%d (%d updates dropped)", tc.attack, tc.agg, cfg.Rounds-1, dropped)
		}
	}
}

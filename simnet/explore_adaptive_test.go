package simnet

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/task"
)

func trainAll(t *testing.T, tk *task.FRL, model []byte, round uint64, clients []int) [][]byte {
	out := make([][]byte, len(clients))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := tk.Train(task.Job{Client: c, Round: round, Model: model, Seed: uint64(c)*7919 + round})
			if err != nil {
				panic(err)
			}
			out[i] = p
		}()
	}
	wg.Wait()
	return out
}

func voteOf(t *testing.T, tk *task.FRL, agg string, model []byte, round uint64, ups [][]byte) ([]byte, int) {
	a, _ := tk.NewAggregator(agg)
	a.Begin(round, model)
	for i, u := range ups {
		if err := a.Add(aggregate.Update{Peer: string(rune('a' + i)), Samples: 1, Payload: u}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := a.Finalize()
	if err != nil {
		t.Fatal(err)
	}
	d := 0
	if r, ok := a.(aggregate.DropReporter); ok {
		d = len(r.Dropped())
	}
	return m, d
}

func TestExploreAdaptive(t *testing.T) {
	if os.Getenv("EXPLORE") == "" {
		t.Skip()
	}
	cfg, sc, err := Resolve(Config{Scenario: "frl-mnist", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tk := b.(*task.FRL)
	model, _ := tk.InitialModel()
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(lo, hi, k int) []int {
		p := rng.Perm(hi - lo)[:k]
		for i := range p {
			p[i] += lo
		}
		return p
	}
	pre := 10
	for r := 1; r <= pre; r++ {
		ups := trainAll(t, tk, model, uint64(r), pick(200, 1000, 25))
		model, _ = voteOf(t, tk, "vote-robust", model, uint64(r), ups)
	}
	ev, _ := tk.Evaluate(model)
	t.Logf("after %d rounds: %.4f", pre, ev.Accuracy)
	variants := strings.Split(os.Getenv("VARIANTS"), ";")
	m := 5
	for r := pre + 1; r <= pre+3; r++ {
		honest := trainAll(t, tk, model, uint64(r), pick(200, 1000, 25))
		est := trainAll(t, tk, model, uint64(r), pick(0, 200, 25))
		base, _ := voteOf(t, tk, "vote-robust", model, uint64(r), honest[:25-m])
		eb, _ := tk.Evaluate(base)
		full, _ := voteOf(t, tk, "vote-robust", model, uint64(r), honest)
		ef, _ := tk.Evaluate(full)
		t.Logf("round %d: honest-only %.4f, 25 honest %.4f", r, eb.Accuracy, ef.Accuracy)
		for _, v := range variants {
			// v: attack|ENV=val,ENV=val
			name, envs, _ := strings.Cut(v, "|")
			for _, kv := range strings.Split(envs, "&") {
				if k, val, ok := strings.Cut(kv, "="); ok {
					os.Setenv(k, val)
				}
			}
			p := task.Poison{Attack: name, Job: task.Job{Round: uint64(r), Model: model}, Honest: est, Attackers: m, Voters: 25}
			if a, par, ok := strings.Cut(name, ":"); ok {
				p.Attack = a
				var x float64
				for _, c := range par {
					_ = c
				}
				if _, err := fmtSscan(par, &x); err == nil {
					p.Target = x
				}
			}
			t0 := time.Now()
			pay, err := tk.Poison(p)
			t.Logf("   poison %s: %v", name, time.Since(t0))
			if err != nil {
				t.Fatal(err)
			}
			ups := append([][]byte{}, honest[:25-m]...)
			for range m {
				ups = append(ups, pay)
			}
			for _, agg := range []string{"vote-robust", "vote"} {
				res, dropped := voteOf(t, tk, agg, model, uint64(r), ups)
				e, _ := tk.Evaluate(res)
				t.Logf("   %-40s %-11s acc %.4f (%+.4f) dropped %d", v, agg, e.Accuracy, e.Accuracy-eb.Accuracy, dropped)
			}
			for _, kv := range strings.Split(envs, "&") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					os.Unsetenv(k)
				}
			}
		}
		model = base
	}
}

func fmtSscan(s string, x *float64) (int, error) { return fmt.Sscan(s, x) }

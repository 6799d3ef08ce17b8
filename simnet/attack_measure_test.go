package simnet

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/task"
)

// dropTask wraps a task so that its aggregators record, per round, which
// updates they were given and which they dropped (aggregate.DropReporter).
type dropTask struct {
	task.Attackable
	mu     sync.Mutex
	rounds []dropRound
}

type dropRound struct {
	peers, dropped []string
	distances      []float64 // vote-robust only
	limit          float64
}

func (d *dropTask) NewAggregator(name string) (aggregate.Aggregator, error) {
	a, err := d.Attackable.NewAggregator(name)
	if err != nil {
		return nil, err
	}
	return &dropAgg{Aggregator: a, t: d}, nil
}

type dropAgg struct {
	aggregate.Aggregator
	t     *dropTask
	peers []string
}

func (a *dropAgg) Begin(round uint64, global []byte) error {
	a.peers = a.peers[:0]
	return a.Aggregator.Begin(round, global)
}

func (a *dropAgg) Add(u aggregate.Update) error {
	err := a.Aggregator.Add(u)
	if err == nil {
		a.peers = append(a.peers, u.Peer)
	}
	return err
}

func (a *dropAgg) Finalize() ([]byte, error) {
	m, err := a.Aggregator.Finalize()
	if err != nil {
		return m, err
	}
	r := dropRound{peers: slices.Clone(a.peers)}
	if dr, ok := a.Aggregator.(aggregate.DropReporter); ok {
		r.dropped = dr.Dropped()
	}
	if fv, ok := a.Aggregator.(*aggregate.FilteredVote); ok {
		r.distances, r.limit = fv.Distances(), fv.Limit()
	}
	a.t.mu.Lock()
	a.t.rounds = append(a.t.rounds, r)
	a.t.mu.Unlock()
	return m, nil
}

// attackMeasure is one measured run.
type attackMeasure struct {
	final, meanLate             float64 // final accuracy, mean over rounds 11..
	attackers, droppedAttackers int     // summed over rounds
	droppedHonest               int
	wall                        time.Duration
	rep                         *Report
	rounds                      []dropRound
}

// measureAttack runs cfg (resolved) and counts the dropped updates.
func measureAttack(t *testing.T, cfg Config) attackMeasure {
	t.Helper()
	cfg, sc, err := Resolve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	at, ok := tk.(task.Attackable)
	if !ok {
		t.Fatalf("%s: not attackable", cfg.Scenario)
	}
	dt := &dropTask{Attackable: at}
	start := time.Now()
	rep, err := Simulate(context.Background(), cfg, dt, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := attackMeasure{final: rep.FinalAccuracy, wall: time.Since(start), rep: rep, rounds: dt.rounds}
	late := 0
	for _, r := range rep.Rounds {
		if r.Round > 10 {
			m.meanLate += r.Accuracy
			late++
		}
	}
	m.meanLate /= float64(max(late, 1))
	nAtt := AttackerCount(cfg.Attackers, cfg.Peers)
	isAtt := func(p string) bool {
		i, err := strconv.Atoi(strings.TrimPrefix(p, "peer-"))
		return err == nil && i < nAtt
	}
	for _, r := range dt.rounds {
		for _, p := range r.peers {
			if isAtt(p) {
				m.attackers++
			}
		}
		for _, p := range r.dropped {
			if isAtt(p) {
				m.droppedAttackers++
			} else {
				m.droppedHonest++
			}
		}
	}
	return m
}

func envList(name, def string) []string {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	return strings.Split(v, ",")
}

// TestAttackMeasure measures attacks against aggregators on the MNIST
// scenarios, one run at a time, and prints a Markdown table: final accuracy,
// mean accuracy over rounds 11 on, and the attackers (summed over rounds)
// that the aggregator dropped. It runs only with FEDRANK_ATTACK_MEASURE=1:
//
//	FEDRANK_ATTACK_MEASURE=1 FEDRANK_MEASURE_SCENARIO=frl-mnist \
//	  FEDRANK_MEASURE_AGGREGATORS=vote-robust,vote FEDRANK_MEASURE_ATTACKS=adaptive \
//	  FEDRANK_MEASURE_SEEDS=1,2,3 go test ./simnet -run TestAttackMeasure -v -timeout 3h
//
// FEDRANK_MEASURE_ROUNDS (default 30) and FEDRANK_MEASURE_FRACTION (default
// 0.2) set the rounds and the attackers; the attack "none" is the run
// without attackers. The rest is the FRL reference setting: 1000 peers, 25
// per round, Dirichlet 1.0.
func TestAttackMeasure(t *testing.T) {
	if os.Getenv("FEDRANK_ATTACK_MEASURE") == "" {
		t.Skip("set FEDRANK_ATTACK_MEASURE=1 to measure attacks")
	}
	rounds, _ := strconv.Atoi(os.Getenv("FEDRANK_MEASURE_ROUNDS"))
	frac, _ := strconv.ParseFloat(os.Getenv("FEDRANK_MEASURE_FRACTION"), 64)
	if frac == 0 {
		frac = 0.2
	}
	var out strings.Builder
	fmt.Fprintf(&out, "| scenario | aggregator | attack | seed | final | mean 11+ | attackers dropped | honest dropped | wall s |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range envList("FEDRANK_MEASURE_SCENARIO", "frl-mnist") {
		for _, agg := range envList("FEDRANK_MEASURE_AGGREGATORS", "vote-robust") {
			for _, attack := range envList("FEDRANK_MEASURE_ATTACKS", "adaptive") {
				for _, s := range envList("FEDRANK_MEASURE_SEEDS", "1") {
					seed, err := strconv.ParseUint(s, 10, 64)
					if err != nil {
						t.Fatal(err)
					}
					cfg := Config{Scenario: sc, Peers: 1000, PerRound: 25, Rounds: cmpOr(rounds, 30),
						Partition: "dirichlet:1.0", Seed: seed, Aggregator: agg, Attack: attack, Attackers: frac}
					if attack == "none" {
						cfg.Attack, cfg.Attackers = "", 0
					}
					m := measureAttack(t, cfg)
					line := fmt.Sprintf("| %s | %s | %s | %d | %.4f | %.4f | %d of %d | %d | %.0f |\n",
						sc, agg, attack, seed, m.final, m.meanLate, m.droppedAttackers, m.attackers, m.droppedHonest, m.wall.Seconds())
					t.Log(strings.TrimSpace(line))
					if os.Getenv("FEDRANK_MEASURE_VERBOSE") != "" {
						for i, r := range m.rep.Rounds {
							var d string
							if i < len(m.rounds) && m.rounds[i].distances != nil {
								d = fmt.Sprintf(" limit %.4f dropped %v dist %.3f", m.rounds[i].limit, m.rounds[i].dropped, m.rounds[i].distances)
							}
							t.Logf("  round %d acc %.4f%s", r.Round, r.Accuracy, d)
						}
					}
					out.WriteString(line)
				}
			}
		}
	}
	t.Logf("\n%s", out.String())
	if p := os.Getenv("FEDRANK_MEASURE_OUT"); p != "" {
		if err := os.WriteFile(p, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

package simnet

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
)

// streamRedraw seeds the redraws of a selection with an attacker majority.
const streamRedraw uint64 = 0x726564726177

// trainSeed is the seed of client's local training in a round: what the
// simulator gives a trainer's task.Job, and what a collective attack gives
// the honest training of the round's other attackers.
func trainSeed(seed, round uint64, client int) uint64 {
	return splitmix.Derive(seed, streamTrain, round, uint64(client))
}

// How an attack makes an attacker's update.
type attackMode int

const (
	// poisonCollective: the round's attackers train honestly, and each sends
	// the task's poisoning of all their updates (FRL rank reversal).
	poisonCollective attackMode = iota
	// poisonOwn: the attacker trains honestly and poisons its own update.
	poisonOwn
	// poisonForge: the attacker forges an update from its seed alone.
	poisonForge
	// trainFlipped: the attacker trains honestly on flipped labels.
	trainFlipped
)

type attackDef struct {
	Info
	kinds []task.UpdateKind // the update kinds it applies to
	mode  attackMode
}

var attackDefs = []attackDef{
	{Info{task.AttackReverse, "FRL rank reversal: the round's attackers train honestly, sum their positions and all send the reverse of that ranking"},
		[]task.UpdateKind{task.Rankings}, poisonCollective},
	{Info{task.AttackRandom, "a uniformly random ranking of every layer"},
		[]task.UpdateKind{task.Rankings}, poisonForge},
	{Info{task.AttackSignFlip, fmt.Sprintf("sign flip with scaling: sends global - %g x (trained - global)", float64(task.DefaultFlipScale))},
		[]task.UpdateKind{task.Weights}, poisonOwn},
	{Info{task.AttackNoise, fmt.Sprintf("additive Gaussian noise: sends the trained weights + N(0, %g^2) each", float64(task.DefaultNoiseSigma))},
		[]task.UpdateKind{task.Weights}, poisonOwn},
	{Info{task.AttackLabelFlip, "label flipping: trains honestly on labels l -> 9-l (classes-1-l)"},
		[]task.UpdateKind{task.Rankings, task.Weights}, trainFlipped},
}

// Attacks lists the attacker behaviours (--attack), for `sim --list`.
func Attacks() []Info {
	out := make([]Info, len(attackDefs))
	for i, d := range attackDefs {
		out[i] = d.Info
	}
	return out
}

// AttacksFor lists the attacks that apply to updates of the given kind.
func AttacksFor(kind task.UpdateKind) []string {
	var out []string
	for _, d := range attackDefs {
		if slices.Contains(d.kinds, kind) {
			out = append(out, d.Name)
		}
	}
	return out
}

func lookupAttack(name string) (attackDef, bool) {
	for _, d := range attackDefs {
		if d.Name == name {
			return d, true
		}
	}
	return attackDef{}, false
}

// AttackerCount is the number of attacker peers of a run, floor(fraction ×
// peers), as in the FRL reference: peers 0 .. AttackerCount-1 attack.
func AttackerCount(fraction float64, peers int) int {
	// The epsilon keeps 0.29 × 100 at 29 despite binary fractions.
	return int(math.Floor(fraction*float64(peers) + 1e-9))
}

// checkAttack validates the attack settings of an effective config against
// the update kind of its task ("" when not known yet).
func checkAttack(cfg Config, kind task.UpdateKind) error {
	if cfg.Attack == "" && cfg.Attackers == 0 {
		return nil
	}
	names := make([]string, len(attackDefs))
	for i, d := range attackDefs {
		names[i] = d.Name
	}
	if cfg.Attack == "" {
		return &ConfigError{Field: "attack", Msg: fmt.Sprintf("attackers %v given without an attack (have: %s)", cfg.Attackers, strings.Join(names, ", "))}
	}
	d, ok := lookupAttack(cfg.Attack)
	if !ok {
		return &ConfigError{Field: "attack", Msg: fmt.Sprintf("unknown attack %q (have: %s)", cfg.Attack, strings.Join(names, ", "))}
	}
	if kind != "" && !slices.Contains(d.kinds, kind) {
		return &ConfigError{Field: "attack", Msg: fmt.Sprintf("attack %q does not apply to scenario %s, whose updates are %s (its attacks: %s)",
			cfg.Attack, cfg.Scenario, kind, strings.Join(AttacksFor(kind), ", "))}
	}
	if cfg.Attackers == 0 {
		return &ConfigError{Field: "attackers", Msg: fmt.Sprintf("attack %q given without a fraction of attackers (e.g. --attackers 0.2)", cfg.Attack)}
	}
	if AttackerCount(cfg.Attackers, cfg.Peers) == 0 {
		return &ConfigError{Field: "attackers", Msg: fmt.Sprintf("%v of %d peers is no attacker at all", cfg.Attackers, cfg.Peers)}
	}
	return nil
}

// attack runs the attacker peers of a simulation: it picks each round's
// trainers so that attackers are never a majority, and makes their updates.
type attack struct {
	def       attackDef
	task      task.Attackable
	attackers int    // clients 0 .. attackers-1 attack
	seed      uint64 // the run's seed: the training seeds of the round's attackers
	clientOf  map[node.PeerID]int

	// What the aggregator's node.Machine passes to selectPeers, so that the
	// round's attackers can be found again.
	members  []node.PeerID // sorted
	perRound int
	selSeed  uint64

	mu     sync.Mutex
	rounds map[uint64]*roundPoison // collective attacks: the latest round
}

// newAttack returns the attack of cfg on t, or nil if cfg has no attackers.
// members are the trainers' IDs, member i training client i, and selSeed the
// selection seed of the federation (node.Config.Seed).
func newAttack(cfg Config, t task.Task, members []node.PeerID, selSeed uint64) (*attack, error) {
	if err := checkAttack(cfg, ""); err != nil || cfg.Attackers == 0 {
		return nil, err
	}
	at, ok := t.(task.Attackable)
	if !ok {
		return nil, &ConfigError{Field: "attack", Msg: fmt.Sprintf("the task of scenario %s supports no attacks", cfg.Scenario)}
	}
	if err := checkAttack(cfg, at.UpdateKind()); err != nil {
		return nil, err
	}
	d, _ := lookupAttack(cfg.Attack)
	a := &attack{
		def: d, task: at, attackers: AttackerCount(cfg.Attackers, cfg.Peers), seed: cfg.Seed,
		clientOf: make(map[node.PeerID]int, len(members)),
		members:  slices.Sorted(slices.Values(members)), perRound: cfg.PerRound, selSeed: selSeed,
		rounds: map[uint64]*roundPoison{},
	}
	for i, id := range members {
		a.clientOf[id] = i
	}
	return a, nil
}

func (a *attack) isAttacker(id node.PeerID) bool {
	c, ok := a.clientOf[id]
	return ok && c < a.attackers
}

// selectPeers is the node.SelectFunc of an attacked run, as in the FRL
// reference: a uniform draw (node.SelectUniform, so that a draw with a
// minority of attackers is the one a run without attackers makes), drawn again
// while attackers are half of it or more. It ends: attackers are fewer than
// half of all peers, so more than k/2 peers are honest and a draw with an
// honest majority has a positive probability.
func (a *attack) selectPeers(round uint64, members []node.PeerID, k int, seed uint64) []node.PeerID {
	for try := uint64(0); ; try++ {
		s := seed
		if try > 0 {
			s = splitmix.Derive(seed, streamRedraw, try)
		}
		sel := node.SelectUniform(round, members, k, s)
		bad := 0
		for _, p := range sel {
			if a.isAttacker(p) {
				bad++
			}
		}
		if 2*bad < k {
			return sel
		}
	}
}

// behaviour returns the behaviour of every attacker peer.
func (a *attack) behaviour() behaviour { return attacker{a} }

type attacker struct{ a *attack }

func (b attacker) train(_ task.Task, job task.Job) ([]byte, error) {
	a := b.a
	switch a.def.mode {
	case trainFlipped:
		return a.task.TrainFlipped(job)
	case poisonForge:
		return a.task.Poison(task.Poison{Attack: a.def.Name, Job: job})
	case poisonOwn:
		h, err := a.task.Train(job)
		if err != nil {
			return nil, err
		}
		return a.task.Poison(task.Poison{Attack: a.def.Name, Job: job, Honest: [][]byte{h}})
	}
	return a.collective(job)
}

// roundPoison is the shared state of a round's attackers in a collective
// attack: the honest update of each, computed once by whichever of them gets
// to it first, and the poisoned update they all send.
type roundPoison struct {
	model   []byte
	clients []int // the round's attackers, ascending
	honest  []onceUpdate
	out     onceUpdate
}

type onceUpdate struct {
	once    sync.Once
	payload []byte
	err     error
}

// collective makes the update of a collective attack. Each attacker's job
// first trains the round's attackers it finds untrained, starting with
// itself, so they train in parallel on the worker pool; a job waits only for
// training that another job is running (never for queued work), so the pool
// cannot deadlock. The result depends only on the round, its model and its
// attackers, never on the order the jobs run in.
func (a *attack) collective(job task.Job) ([]byte, error) {
	rp, err := a.round(job)
	if err != nil {
		return nil, err
	}
	me := slices.Index(rp.clients, job.Client)
	if me < 0 {
		return nil, fmt.Errorf("simnet: attacker %d trains in round %d, which did not select it", job.Client, job.Round)
	}
	for i := range rp.clients {
		k := (me + i) % len(rp.clients)
		h := &rp.honest[k]
		h.once.Do(func() {
			j := job
			j.Client = rp.clients[k]
			j.Seed = trainSeed(a.seed, job.Round, j.Client)
			h.payload, h.err = a.task.Train(j)
		})
	}
	rp.out.once.Do(func() {
		honest := make([][]byte, len(rp.honest))
		for k := range rp.honest {
			if err := rp.honest[k].err; err != nil {
				rp.out.err = fmt.Errorf("simnet: honest training of attacker %d: %w", rp.clients[k], err)
				return
			}
			honest[k] = rp.honest[k].payload
		}
		rp.out.payload, rp.out.err = a.task.Poison(task.Poison{Attack: a.def.Name, Job: job, Honest: honest})
	})
	return rp.out.payload, rp.out.err
}

// round returns the collective state of job's round, made on first use.
// Earlier rounds are dropped.
func (a *attack) round(job task.Job) (*roundPoison, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rp, ok := a.rounds[job.Round]
	if !ok {
		var clients []int
		for _, id := range a.selectPeers(job.Round, a.members, a.perRound, a.selSeed) {
			if a.isAttacker(id) {
				clients = append(clients, a.clientOf[id])
			}
		}
		slices.Sort(clients)
		rp = &roundPoison{model: job.Model, clients: clients, honest: make([]onceUpdate, len(clients))}
		for r := range a.rounds {
			if r < job.Round {
				delete(a.rounds, r)
			}
		}
		a.rounds[job.Round] = rp
	}
	if !bytes.Equal(rp.model, job.Model) {
		return nil, fmt.Errorf("simnet: the attackers of round %d train from different models", job.Round)
	}
	return rp, nil
}

package simnet

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
)

// streamRedraw seeds the redraws of a selection with an attacker majority.
const streamRedraw uint64 = 0x726564726177

// streamEstimate seeds the draw of the attacker clients a collective attack
// trains in a round.
const streamEstimate uint64 = 0x657374696d617465

// trainSeed is the seed of client's local training in a round: what the
// simulator gives a trainer's task.Job, and what a collective attack gives
// the honest training of the attacker clients it trains.
func trainSeed(seed, round uint64, client int) uint64 {
	return splitmix.Derive(seed, streamTrain, round, uint64(client))
}

// How an attack makes an attacker's update.
type attackMode int

const (
	// poisonCollective: min(attackers, per-round) attacker clients train
	// honestly, as in the FRL reference, and every attacker of the round
	// sends the task's poisoning of all their updates (FRL rank reversal).
	poisonCollective attackMode = iota
	// poisonOwn: the attacker trains honestly and poisons its own update.
	poisonOwn
	// poisonForge: the attacker forges an update from its job alone.
	poisonForge
	// trainFlipped: the attacker trains honestly on flipped labels.
	trainFlipped
)

type attackDef struct {
	Info
	kinds []task.UpdateKind // the update kinds it applies to
	mode  attackMode
	// arg reads the parameter of "name:PARAM" into the poison's settings;
	// nil for an attack that takes none.
	arg func(p *task.Poison, param string) error
}

var attackDefs = []attackDef{
	{Info{task.AttackReverse, "FRL rank reversal: min(attackers, per-round) attacker clients train honestly, and the round's attackers all send the reverse of their Borda ranking"},
		[]task.UpdateKind{task.Rankings}, poisonCollective, nil},
	{Info{task.AttackRandom, "a uniformly random ranking of every layer"},
		[]task.UpdateKind{task.Rankings}, poisonForge, nil},
	{Info{task.AttackAdaptive, fmt.Sprintf("knows vote-robust's filter: from min(attackers, per-round) honestly trained attacker clients, estimates the consensus and the distance limit, and all send the consensus with edges moved across the mask's boundaries (kept ones their training made more useful out, unkept ones it made less useful in, cheapest first), as far as the Borda count needs, up to T x the estimated limit; adaptive:T, default T = %g", task.DefaultAdaptiveTarget)},
		[]task.UpdateKind{task.Rankings}, poisonCollective, floatArg(func(p *task.Poison, v float64) { p.Target = v })},
	{Info{task.AttackAdaptiveSplit, "as adaptive, but the edges to move are dealt out among the round's attackers, each edge moved by G of them (as far as G votes need), so that their rankings are no more alike than honest ones (against a filter on how alike voters are); adaptive-split:G, default G = 1"},
		[]task.UpdateKind{task.Rankings}, poisonCollective, intArg(func(p *task.Poison, v int) { p.Group = v })},
	{Info{task.AttackAdaptiveNoise, fmt.Sprintf("as adaptive, all sending the same moves on 1-Q of vote-robust's distance budget, and each its own harmless moves (edges in the mask's unkept middle moved by the estimated clamp radius of vote-clamp) on the rest: their push stays shared, their rankings are no more alike than honest ones; the strongest attack found on vote-clamp; adaptive-noise:Q, default Q = %g", task.DefaultAdaptiveNoise)},
		[]task.UpdateKind{task.Rankings}, poisonCollective, shareArg(func(p *task.Poison, v float64) { p.Noise = v })},
	{Info{task.AttackAdaptiveRotate, fmt.Sprintf("knows a sign vote (only the direction of each move counts): within T x vote-robust's estimated distance limit as adaptive, all send the consensus with the w positions just inside each boundary of the mask swapped with the w just outside it, w as large as the limit allows; adaptive-rotate:T, default T = %g", task.DefaultAdaptiveTarget)},
		[]task.UpdateKind{task.Rankings}, poisonCollective, floatArg(func(p *task.Poison, v float64) { p.Target = v })},
	{Info{task.AttackSignFlip, fmt.Sprintf("sign flip with scaling: sends global - %g x (trained - global); on adapter factors, that of B (A as trained)", float64(task.DefaultFlipScale))},
		[]task.UpdateKind{task.Weights, task.Factors}, poisonOwn, nil},
	{Info{task.AttackNoise, fmt.Sprintf("additive Gaussian noise: sends the trained weights (or adapter factors) + N(0, %g^2) each", float64(task.DefaultNoiseSigma))},
		[]task.UpdateKind{task.Weights, task.Factors}, poisonOwn, nil},
	{Info{task.AttackScale, fmt.Sprintf("the FRL reference's scaling attack: sends global + F x global (its update is F times the global model), trains nothing; scale:F, default F = %g", float64(task.DefaultScale))},
		[]task.UpdateKind{task.Weights}, poisonForge, floatArg(func(p *task.Poison, v float64) { p.Scale = v })},
	{Info{task.AttackBoost, fmt.Sprintf("boosting: sends global + F x (trained - global), the honest step scaled; boost:F, default F = %g", float64(task.DefaultBoost))},
		[]task.UpdateKind{task.Weights}, poisonOwn, floatArg(func(p *task.Poison, v float64) { p.Scale = v })},
	{Info{task.AttackMinMax, "NDSS'21 min-max: from min(attackers, per-round) honestly trained attacker clients, sends mean + gamma x perturbation with the largest gamma whose largest squared distance to them is within their own; minmax:unit|std|sign picks the perturbation: minus the unit vector of the mean step (default), minus the standard deviation, minus the sign"},
		[]task.UpdateKind{task.Weights}, poisonCollective, deviationArg},
	{Info{task.AttackMinSum, "NDSS'21 min-sum: as minmax, with the sum of squared distances to the trained updates within the largest such sum of one of them; minsum:unit|std|sign"},
		[]task.UpdateKind{task.Weights}, poisonCollective, deviationArg},
	{Info{task.AttackLabelFlip, "label flipping: trains honestly on labels l -> 9-l (classes-1-l)"},
		[]task.UpdateKind{task.Rankings, task.Weights, task.Factors}, trainFlipped, nil},
}

// floatArg reads a positive number.
func floatArg(set func(p *task.Poison, v float64)) func(p *task.Poison, param string) error {
	return func(p *task.Poison, param string) error {
		v, err := strconv.ParseFloat(param, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 1) {
			return fmt.Errorf("parameter %q, want a positive number", param)
		}
		set(p, v)
		return nil
	}
}

// intArg reads a positive integer.
func intArg(set func(p *task.Poison, v int)) func(p *task.Poison, param string) error {
	return func(p *task.Poison, param string) error {
		v, err := strconv.Atoi(param)
		if err != nil || v <= 0 {
			return fmt.Errorf("parameter %q, want a positive integer", param)
		}
		set(p, v)
		return nil
	}
}

// shareArg reads a number in (0, 1).
func shareArg(set func(p *task.Poison, v float64)) func(p *task.Poison, param string) error {
	return func(p *task.Poison, param string) error {
		v, err := strconv.ParseFloat(param, 64)
		if err != nil || !(v > 0 && v < 1) {
			return fmt.Errorf("parameter %q, want a share in (0, 1)", param)
		}
		set(p, v)
		return nil
	}
}

func deviationArg(p *task.Poison, param string) error {
	switch param {
	case task.DeviationUnit, task.DeviationStd, task.DeviationSign:
		p.Deviation = param
		return nil
	}
	return fmt.Errorf("parameter %q, want %s, %s or %s", param, task.DeviationUnit, task.DeviationStd, task.DeviationSign)
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

// lookupAttack finds the attack of an --attack value, "name" or
// "name:PARAM", and the settings it gives. ok is false for an unknown name;
// err reports a bad parameter.
func lookupAttack(value string) (d attackDef, p task.Poison, ok bool, err error) {
	name, param, hasParam := strings.Cut(value, ":")
	for _, d := range attackDefs {
		if d.Name != name {
			continue
		}
		p := task.Poison{Attack: d.Name}
		switch {
		case hasParam && d.arg == nil:
			err = fmt.Errorf("attack %q takes no parameter", name)
		case hasParam:
			if err = d.arg(&p, param); err != nil {
				err = fmt.Errorf("attack %q: %w", name, err)
			}
		}
		return d, p, true, err
	}
	return attackDef{}, task.Poison{}, false, nil
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
	d, _, ok, err := lookupAttack(cfg.Attack)
	if !ok {
		return &ConfigError{Field: "attack", Msg: fmt.Sprintf("unknown attack %q (have: %s)", cfg.Attack, strings.Join(names, ", "))}
	}
	if err != nil {
		return &ConfigError{Field: "attack", Msg: err.Error()}
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
	poison    task.Poison // the attack's name and settings
	task      task.Attackable
	attackers int    // clients 0 .. attackers-1 attack
	seed      uint64 // the run's seed: the draw and training seeds of the attacker clients a collective attack trains
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
	d, p, _, _ := lookupAttack(cfg.Attack)
	a := &attack{
		def: d, poison: p, task: at, attackers: AttackerCount(cfg.Attackers, cfg.Peers), seed: cfg.Seed,
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
		p := a.poison
		p.Job = job
		return a.task.Poison(p)
	case poisonOwn:
		h, err := a.task.Train(job)
		if err != nil {
			return nil, err
		}
		p := a.poison
		p.Job, p.Honest = job, [][]byte{h}
		return a.task.Poison(p)
	}
	return a.collective(job)
}

// roundPoison is the shared state of a round's attackers in a collective
// attack: the honest update of each attacker client trained to estimate the
// honest direction, computed once by whichever attacker gets to it first,
// and the poisoned update they all send.
type roundPoison struct {
	model   []byte
	clients []int // the round's attackers, ascending
	trained []int // the attacker clients that train honestly, ascending
	honest  []onceUpdate
	out     onceUpdate
}

type onceUpdate struct {
	once    sync.Once
	payload []byte
	err     error
}

// estimators draws the attacker clients a collective attack trains in a
// round, as the FRL reference does (np.random.choice(n_attackers,
// min(n_attackers, rand_mal_clients), replace=False), with rand_mal_clients
// = 25, the clients per round): min(attackers, per-round) of all the
// attacker clients, uniformly, whether the round selected them or not.
func (a *attack) estimators(round uint64) []int {
	k := min(a.attackers, a.perRound)
	idx := make([]int, a.attackers)
	for i := range idx {
		idx[i] = i
	}
	r := splitmix.Source{State: splitmix.Derive(a.seed, streamEstimate, round)}
	for i := range k {
		j := i + int(r.Below(uint64(a.attackers-i)))
		idx[i], idx[j] = idx[j], idx[i]
	}
	return slices.Sorted(slices.Values(idx[:k]))
}

// collective makes the update of a collective attack. Each attacker's job
// first trains the attacker clients it finds untrained, starting at its own
// share of them, so they train in parallel on the worker pool; a job waits
// only for training that another job is running (never for queued work), so
// the pool cannot deadlock. The result depends only on the round, its model
// and its attackers, never on the order the jobs run in.
func (a *attack) collective(job task.Job) ([]byte, error) {
	rp, err := a.round(job)
	if err != nil {
		return nil, err
	}
	me := slices.Index(rp.clients, job.Client)
	if me < 0 {
		return nil, fmt.Errorf("simnet: attacker %d trains in round %d, which did not select it", job.Client, job.Round)
	}
	start := me * len(rp.trained) / len(rp.clients)
	for i := range rp.trained {
		k := (start + i) % len(rp.trained)
		h := &rp.honest[k]
		h.once.Do(func() {
			j := job
			j.Client = rp.trained[k]
			j.Seed = trainSeed(a.seed, job.Round, j.Client)
			h.payload, h.err = a.task.Train(j)
		})
	}
	if a.poison.Attack == task.AttackAdaptiveSplit || a.poison.Attack == task.AttackAdaptiveNoise {
		// Each attacker sends its own share of the moves.
		honest := make([][]byte, len(rp.honest))
		for k := range rp.honest {
			if err := rp.honest[k].err; err != nil {
				return nil, fmt.Errorf("simnet: honest training of attacker %d: %w", rp.trained[k], err)
			}
			honest[k] = rp.honest[k].payload
		}
		first := rp.clients[0]
		p := a.poison
		p.Job = task.Job{Client: first, Round: job.Round, Model: rp.model, Seed: trainSeed(a.seed, job.Round, first)}
		p.Honest = honest
		p.Attackers, p.Voters, p.Index = len(rp.clients), a.perRound, me
		return a.task.Poison(p)
	}
	rp.out.once.Do(func() {
		honest := make([][]byte, len(rp.honest))
		for k := range rp.honest {
			if err := rp.honest[k].err; err != nil {
				rp.out.err = fmt.Errorf("simnet: honest training of attacker %d: %w", rp.trained[k], err)
				return
			}
			honest[k] = rp.honest[k].payload
		}
		// The job of the round's first attacker, whichever job gets here.
		first := rp.clients[0]
		p := a.poison
		p.Job = task.Job{Client: first, Round: job.Round, Model: rp.model, Seed: trainSeed(a.seed, job.Round, first)}
		p.Honest = honest
		p.Attackers, p.Voters = len(rp.clients), a.perRound
		rp.out.payload, rp.out.err = a.task.Poison(p)
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
		trained := a.estimators(job.Round)
		rp = &roundPoison{model: job.Model, clients: clients, trained: trained, honest: make([]onceUpdate, len(trained))}
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

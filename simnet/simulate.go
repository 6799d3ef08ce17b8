package simnet

import (
	"container/heap"
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/task"
	"github.com/fedrank/fedrank/wire"
)

// Observer is told about every round, in round order, once its model has been
// evaluated. It runs on Simulate's goroutine; nil is allowed.
type Observer func(r RoundReport, totalRounds int)

// The virtual compute time of one local training run: a fixed cost plus a cost
// per local example and epoch (2 epochs). Virtual time only shapes the
// simulated timeline (deadlines, sim_ms); real training runs on the pool.
const (
	trainBaseNs        = 2 * ms
	trainPerSampleNs   = ms / 20 // 0.05 ms per example and epoch
	trainEpochsAssumed = 2
)

// Limits given to the protocol machines.
const (
	maxUpdateBytes = 64 << 20
	minModelBytes  = 64 << 20
	envelopeSlack  = 1 << 20 // room for an envelope's other fields (a RoundStart's selected list)
)

// aggregatorID names the simulated aggregator; trainers are peer-0000, peer-0001, ...
const aggregatorID = "aggregator"

func peerID(i int) string { return fmt.Sprintf("peer-%04d", i) }

// Simulate runs cfg (an effective config: defaults filled) on task t with a
// simulated federation: cfg.Peers trainer machines (peer-0000, peer-0001, ...;
// peer i trains on t's client i) and one aggregator, all node.Machine, driven
// by a discrete-event loop over a virtual clock and the network profile cfg.Net
// (see netProfile for the link model). Every message is encoded with
// wire.Marshal and decoded with wire.Unmarshal; an undecodable one is dropped
// and counted as rejected. The run is a function of cfg and t only: the same
// seed gives the same report (wall times aside) and model hash, whatever
// cfg.Workers and the machine's speed.
//
// Protocol settings: a round closes early once ceil(quorum × per_round) updates
// are accepted, otherwise at round_timeout_ms, and any accepted update moves the
// model on (node.Config.MinUpdates = 1). With probability cfg.Crash a selected
// trainer crashes on receiving the round's announcement and restarts, with
// empty state, at the next announcement it receives.
//
// With cfg.Attackers > 0, peers 0 .. AttackerCount-1 are attackers running
// cfg.Attack (see Attacks; t must implement task.Attackable), and a round's
// selection is drawn again while attackers are half of it or more, as in the
// FRL reference.
//
// Local training and evaluation run on cfg.Workers goroutines (0 = GOMAXPROCS):
// a node.Train action submits the job at once (the round's trainers train
// concurrently) and its result is taken when the virtual compute time has
// passed (2 ms + 0.05 ms per local example and epoch, 2 epochs). The global
// model of each round is evaluated on the pool too, overlapping the next round.
//
// In each RoundReport, sim_ms is the virtual time from the round's announcement
// to its close, wall_ms the real time the simulator spent on it (training
// included, evaluation excluded), bytes_up the bytes sent by trainers to the
// aggregator and bytes_down those sent by the aggregator, per recipient, lost
// messages included. obs sees each round in order, once it is evaluated.
// Cancelling ctx stops the run promptly (after the training runs in progress)
// with ctx.Err() and the report of the rounds completed so far.
func Simulate(ctx context.Context, cfg Config, t task.Task, obs Observer) (*Report, error) {
	return simulate(ctx, cfg, t, obs, simOptions{})
}

// simOptions are test hooks.
type simOptions struct {
	// corrupt may replace the bytes of a message in flight (it must not modify
	// b, which may be shared by a broadcast's copies).
	corrupt func(from, to string, b []byte) []byte
	// behaviours replaces the behaviour of the given peers (default honest).
	behaviours map[int]behaviour
}

type evKind uint8

const (
	evStart evKind = iota
	evDeliver
	evTimer
	evTrainDone
)

type event struct {
	at   int64 // virtual ns
	seq  uint64
	kind evKind
	to   int // node index: 0 = aggregator, 1+i = peer i
	from int
	data []byte       // evDeliver
	tid  node.TimerID // evTimer
	gen  uint64       // evTimer: the timer's generation; evTrainDone: the node's incarnation
	job  *trainJob    // evTrainDone
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

type trainJob struct {
	round     uint64
	modelHash []byte
	done      chan struct{}
	payload   []byte
	err       error
	panicked  any
}

type evalJob struct {
	done     chan struct{}
	eval     task.Eval
	err      error
	panicked any
}

type simNode struct {
	id          string
	client      int // -1 for the aggregator
	cfg         node.Config
	m           *node.Machine
	link        link
	timers      map[node.TimerID]uint64
	down        bool   // crashed
	downRound   uint64 // the round it crashed in
	incarnation uint64 // bumped at each crash: drops the old incarnation's work
	samples     int64
	beh         behaviour
}

// roundAcc accumulates what happens while a round is open.
type roundAcc struct {
	round       uint64
	startNs     int64
	wallStart   time.Time
	up, down    int64
	undecodable int
}

type pendingRound struct {
	rr   RoundReport
	eval *evalJob
}

type sim struct {
	ctx   context.Context
	cfg   Config
	task  task.Task
	agg   aggregate.Aggregator // the aggregator machine's strategy
	opts  simOptions
	obs   Observer
	nodes []*simNode
	byID  map[string]int
	// attack runs the attacker peers; nil without attackers.
	attack *attack

	events   eventHeap
	seq      uint64
	now      int64 // virtual ns
	net      network
	pool     *pool
	maxMsg   int
	timerGen uint64

	cur       *roundAcc
	pending   []*pendingRound
	evals     map[string]*evalJob // by model hash: an unchanged model is evaluated once
	rep       *Report
	finalHash []byte
	done      bool
	err       error
	start     time.Time
}

func simulate(ctx context.Context, cfg Config, t task.Task, obs Observer, opts simOptions) (*Report, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n := t.NumClients(); n != cfg.Peers {
		return nil, &ConfigError{Field: "peers", Msg: fmt.Sprintf("%d, but the task has %d clients", cfg.Peers, n)}
	}
	prof, _ := lookupNet(cfg.Net)
	initial, err := t.InitialModel()
	if err != nil {
		return nil, fmt.Errorf("simnet: initial model: %w", err)
	}
	// The starting point: LoRA fine-tuning reports how far it lifts its base
	// model, FRL the accuracy of the random supermask it starts from.
	initEval, err := t.Evaluate(initial)
	if err != nil {
		return nil, fmt.Errorf("simnet: evaluate initial model: %w", err)
	}
	info := t.Info()
	s := &sim{
		ctx: ctx, cfg: cfg, task: t, opts: opts, obs: obs,
		byID:  make(map[string]int, cfg.Peers+1),
		net:   network{p: prof, rng: &splitmix.Source{State: splitmix.Derive(cfg.Seed, streamNet)}},
		evals: map[string]*evalJob{},
		start: start,
		rep: &Report{Scenario: cfg.Scenario, Seed: cfg.Seed, Config: cfg,
			Model:           ModelInfo{Name: orDefault(info.Model, info.Name), Params: info.Params},
			InitialAccuracy: initEval.Accuracy, InitialLoss: initEval.Loss},
	}
	if err := s.build(prof, initial); err != nil {
		return nil, err
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s.pool = newPool(workers)
	defer s.pool.close()

	s.cur = &roundAcc{round: 1, wallStart: time.Now()}
	s.push(&event{kind: evStart, to: 0})
	if err := s.loop(); err != nil {
		return s.finish(), err
	}
	return s.finish(), nil
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// build creates the machines.
func (s *sim) build(prof netProfile, initial []byte) error {
	cfg := s.cfg
	members := make([]string, cfg.Peers)
	for i := range members {
		members[i] = peerID(i)
	}
	quorum := int(math.Ceil(cfg.Quorum*float64(cfg.PerRound) - 1e-9))
	quorum = min(max(quorum, 1), cfg.PerRound)
	maxModel := max(minModelBytes, 2*len(initial))
	s.maxMsg = max(maxModel, maxUpdateBytes) + envelopeSlack
	base := node.Config{
		Federation:     "fedrank-sim/" + orDefault(cfg.Scenario, "custom"),
		Aggregator:     aggregatorID,
		Members:        members,
		PerRound:       cfg.PerRound,
		Quorum:         quorum,
		MinUpdates:     1, // any accepted update moves the model on
		RoundTimeoutMs: cfg.RoundTimeoutMs,
		RetryMs:        retryMs(prof, len(initial), cfg.RoundTimeoutMs),
		Rounds:         uint64(cfg.Rounds),
		Seed:           splitmix.Derive(cfg.Seed, streamSelect),
		MaxUpdateBytes: maxUpdateBytes,
		MaxModelBytes:  maxModel,
	}
	var err error
	if s.attack, err = newAttack(cfg, s.task, members, base.Seed); err != nil {
		return err
	}
	if s.attack != nil {
		base.Select = s.attack.selectPeers // never a malicious majority
	}
	agg := base
	agg.ID, agg.Role = aggregatorID, node.RoleAggregator
	agg.InitialModel = initial
	agg.NewAggregator = func() (aggregate.Aggregator, error) {
		a, err := s.task.NewAggregator(cfg.Aggregator)
		s.agg = a // kept for its per-round metrics
		return a, err
	}
	if err := s.addNode(agg, -1, link{up: prof.aggUp, down: prof.aggDown}); err != nil {
		return err
	}
	for i := range cfg.Peers {
		tc := base
		tc.ID, tc.Role = members[i], node.RoleTrainer
		if err := s.addNode(tc, i, link{up: prof.peerUp, down: prof.peerDown}); err != nil {
			return err
		}
	}
	return nil
}

func (s *sim) addNode(cfg node.Config, client int, l link) error {
	m, err := node.New(cfg)
	if err != nil {
		return fmt.Errorf("simnet: %s: %w", cfg.ID, err)
	}
	n := &simNode{id: cfg.ID, client: client, cfg: cfg, m: m, link: l, timers: map[node.TimerID]uint64{}, beh: honest{}}
	if client >= 0 {
		n.samples = int64(s.task.ClientSamples(client))
		if s.attack != nil && client < s.attack.attackers {
			n.beh = s.attack.behaviour()
		}
		if b, ok := s.opts.behaviours[client]; ok {
			n.beh = b
		}
	}
	s.byID[n.id] = len(s.nodes)
	s.nodes = append(s.nodes, n)
	return nil
}

// retryMs picks the first resend delay of the machines (node.Config.RetryMs):
// twice a round trip plus the model's transfer on the slowest link, at least
// 200 ms, and at most a quarter of the round (so that a few resends fit before
// the deadline).
func retryMs(p netProfile, modelBytes int, timeoutMs int64) int64 {
	slowest := int64(0)
	for _, bw := range []int64{p.peerUp, p.peerDown, p.aggUp, p.aggDown} {
		if bw > 0 && (slowest == 0 || bw < slowest) {
			slowest = bw
		}
	}
	rtt := 2 * (p.latencyNs + p.jitterNs)
	r := 2 * (rtt + txNs(modelBytes, slowest)) / ms
	return min(max(r, 200), max(timeoutMs/4, 1))
}

func (s *sim) push(e *event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.events, e)
}

func (s *sim) loop() error {
	done := s.ctx.Done()
	for !s.done {
		select {
		case <-done:
			// Report the rounds whose evaluation has already finished, so
			// an interrupted run keeps all the work it completed.
			if err := s.flush(false); err != nil {
				return err
			}
			return s.ctx.Err()
		default:
		}
		if len(s.events) == 0 {
			return fmt.Errorf("simnet: stalled at %.3f ms with round %d open", float64(s.now)/float64(ms), s.cur.round)
		}
		e := heap.Pop(&s.events).(*event)
		s.now = e.at
		if err := s.handle(e); err != nil {
			return err
		}
		if err := s.flush(false); err != nil {
			return err
		}
	}
	if s.err != nil {
		return s.err
	}
	return s.flush(true)
}

func (s *sim) handle(e *event) error {
	n := s.nodes[e.to]
	switch e.kind {
	case evStart:
		return s.step(e.to, node.Start{})
	case evDeliver:
		return s.deliver(e)
	case evTimer:
		if gen, ok := n.timers[e.tid]; !ok || gen != e.gen {
			return nil // cancelled, replaced, or set before a crash
		}
		delete(n.timers, e.tid)
		return s.step(e.to, node.TimerFired{ID: e.tid})
	case evTrainDone:
		if n.down || n.incarnation != e.gen {
			return nil // crashed meanwhile: the work is lost
		}
		j := e.job
		select {
		case <-j.done:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
		if j.panicked != nil {
			return fmt.Errorf("simnet: training of %s in round %d panicked: %v", n.id, j.round, j.panicked)
		}
		return s.step(e.to, node.TrainDone{Round: j.round, ModelHash: j.modelHash, Payload: j.payload, Samples: n.samples, Err: j.err})
	}
	return nil
}

func (s *sim) deliver(e *event) error {
	n := s.nodes[e.to]
	msg, err := wire.Unmarshal(e.data, s.maxMsg)
	if err != nil {
		s.cur.undecodable++ // dropped, as the daemon's stream handler drops it
		return nil
	}
	if n.client >= 0 && e.from == 0 {
		if rs := msg.GetRoundStart(); rs != nil {
			if n.down && rs.GetRound() > n.downRound {
				s.restart(n)
			}
			if !n.down && slices.Contains(rs.GetSelected(), n.id) && s.crashes(rs.GetRound(), n) {
				n.down, n.downRound = true, rs.GetRound()
				n.incarnation++
				clear(n.timers)
				return nil
			}
		}
	}
	if n.down {
		return nil
	}
	return s.step(e.to, node.Recv{From: s.nodes[e.from].id, Msg: msg})
}

// crashes draws whether a selected trainer crashes for a round, independently
// of everything else (a hash of seed, round and client).
func (s *sim) crashes(round uint64, n *simNode) bool {
	if s.cfg.Crash <= 0 {
		return false
	}
	r := splitmix.Source{State: splitmix.Derive(s.cfg.Seed, streamCrash, round, uint64(n.client))}
	return r.Float64() < s.cfg.Crash
}

// restart brings a crashed trainer back with empty state (it kept nothing: it
// will pull the model again).
func (s *sim) restart(n *simNode) {
	m, err := node.New(n.cfg)
	if err != nil {
		panic(fmt.Sprintf("simnet: restart %s: %v", n.id, err)) // the config was valid at start
	}
	n.m, n.down = m, false
	clear(n.timers)
}

func (s *sim) step(i int, ev node.Event) error {
	n := s.nodes[i]
	return s.apply(i, n.m.Step(s.now/ms, ev))
}

func (s *sim) apply(i int, acts []node.Action) error {
	n := s.nodes[i]
	for _, a := range acts {
		switch a := a.(type) {
		case node.Send:
			to, ok := s.byID[a.To]
			if !ok {
				return fmt.Errorf("simnet: %s sent to unknown peer %q", n.id, a.To)
			}
			b, err := wire.Marshal(a.Msg)
			if err != nil {
				return fmt.Errorf("simnet: %s: %w", n.id, err)
			}
			s.transmit(i, to, b)
		case node.Broadcast:
			b, err := wire.Marshal(a.Msg)
			if err != nil {
				return fmt.Errorf("simnet: %s: %w", n.id, err)
			}
			for j := 1; j < len(s.nodes); j++ {
				if j != i {
					s.transmit(i, j, b)
				}
			}
		case node.SetTimer:
			s.timerGen++
			n.timers[a.ID] = s.timerGen
			s.push(&event{at: max(s.now, a.AtMs*ms), kind: evTimer, to: i, tid: a.ID, gen: s.timerGen})
		case node.CancelTimer:
			delete(n.timers, a.ID)
		case node.Train:
			s.train(i, a)
		case node.RoundClosed:
			s.roundClosed(a)
		case node.Persist, node.Silent:
			// Simulated peers keep their state in memory (a crashed trainer
			// restarts empty) and their silence shows in the trace only.
		case node.Done:
			if i == 0 {
				s.done, s.err = true, a.Err
			}
		default:
			return fmt.Errorf("simnet: unknown action %T", a)
		}
	}
	return nil
}

// transmit puts b on the network from node i to node j.
func (s *sim) transmit(i, j int, b []byte) {
	from, to := s.nodes[i], s.nodes[j]
	if s.opts.corrupt != nil {
		b = s.opts.corrupt(from.id, to.id, b)
	}
	switch {
	case i == 0:
		s.cur.down += int64(len(b))
	case j == 0:
		s.cur.up += int64(len(b))
	}
	at, ok := s.net.send(s.now, &from.link, &to.link, len(b))
	if !ok {
		return
	}
	s.push(&event{at: at, kind: evDeliver, to: j, from: i, data: b})
}

// train starts local training on the pool now and schedules its completion at
// now + the virtual compute time.
func (s *sim) train(i int, a node.Train) {
	n := s.nodes[i]
	j := &trainJob{round: a.Round, modelHash: a.ModelHash, done: make(chan struct{})}
	job := task.Job{
		Client: n.client,
		Round:  a.Round,
		Model:  slices.Clone(a.Model), // the task may not write to the machine's copy
		Seed:   trainSeed(s.cfg.Seed, a.Round, n.client),
	}
	beh, t := n.beh, s.task
	s.pool.submit(func() {
		defer close(j.done)
		defer func() {
			if p := recover(); p != nil {
				j.panicked = p
			}
		}()
		j.payload, j.err = beh.train(t, job)
	})
	d := trainBaseNs + trainPerSampleNs*trainEpochsAssumed*n.samples
	s.push(&event{at: s.now + d, kind: evTrainDone, to: i, gen: n.incarnation, job: j})
}

func (s *sim) roundClosed(rc node.RoundClosed) {
	acc := s.cur
	hash := hex.EncodeToString(rc.ModelHash)
	rr := RoundReport{
		Round:            rc.Round,
		Selected:         rc.Selected,
		Accepted:         rc.Accepted,
		Rejected:         len(rc.Rejected) + acc.undecodable,
		RejectedByReason: rejectedByReason(rc.Rejected, acc.undecodable),
		BytesUp:          acc.up,
		BytesDown:        acc.down,
		SimMs:            float64(s.now-acc.startNs) / float64(ms),
		WallMs:           float64(time.Since(acc.wallStart).Nanoseconds()) / 1e6,
		ModelHash:        hash,
	}
	// Finalize ran in the step that emitted rc, so the metrics are this round's.
	if m, ok := s.agg.(roundMetrics); ok && rc.Advanced {
		rr.Metrics = m.RoundMetrics()
	}
	ev, ok := s.evals[hash]
	if !ok {
		ev = &evalJob{done: make(chan struct{})}
		model, t := rc.Model, s.task
		s.pool.submit(func() {
			defer close(ev.done)
			defer func() {
				if p := recover(); p != nil {
					ev.panicked = p
				}
			}()
			ev.eval, ev.err = t.Evaluate(model)
		})
		s.evals = map[string]*evalJob{hash: ev} // keep the last model's only
	}
	s.pending = append(s.pending, &pendingRound{rr: rr, eval: ev})
	s.finalHash = rc.ModelHash
	s.cur = &roundAcc{round: rc.Round + 1, startNs: s.now, wallStart: time.Now()}
}

// rejectedByReason counts a round's rejections per reason; undecodable
// messages count as "undecodable". nil when there are none.
func rejectedByReason(rej []node.Rejection, undecodable int) map[string]int {
	if len(rej) == 0 && undecodable == 0 {
		return nil
	}
	out := map[string]int{}
	for _, r := range rej {
		out[string(r.Reason)]++
	}
	if undecodable > 0 {
		out["undecodable"] = undecodable
	}
	return out
}

// flush reports the rounds whose evaluation is done, in round order; with
// block it waits for all of them.
func (s *sim) flush(block bool) error {
	for len(s.pending) > 0 {
		p := s.pending[0]
		if block {
			select {
			case <-p.eval.done:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		} else {
			select {
			case <-p.eval.done:
			default:
				return nil
			}
		}
		switch {
		case p.eval.panicked != nil:
			return fmt.Errorf("simnet: round %d: evaluation panicked: %v", p.rr.Round, p.eval.panicked)
		case p.eval.err != nil:
			return fmt.Errorf("simnet: round %d: evaluate: %w", p.rr.Round, p.eval.err)
		}
		s.pending = s.pending[1:]
		rr := p.rr
		rr.Accuracy, rr.Loss = p.eval.eval.Accuracy, p.eval.eval.Loss
		rep := s.rep
		rep.Rounds = append(rep.Rounds, rr)
		rep.BytesUpTotal += rr.BytesUp
		rep.BytesDownTotal += rr.BytesDown
		rep.FinalAccuracy = rr.Accuracy
		rep.BestAccuracy = max(rep.BestAccuracy, rr.Accuracy)
		rep.Model.Hash = rr.ModelHash
		if s.obs != nil {
			s.obs(rr, s.cfg.Rounds)
		}
	}
	return nil
}

// finish completes the report (of the rounds reported so far).
func (s *sim) finish() *Report {
	s.rep.WallSeconds = time.Since(s.start).Seconds()
	accepted := 0
	for _, r := range s.rep.Rounds {
		accepted += r.Accepted
	}
	if accepted > 0 {
		s.rep.BytesUpPerUpdate = float64(s.rep.BytesUpTotal) / float64(accepted)
	}
	return s.rep
}

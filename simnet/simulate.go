package simnet

import (
	"container/heap"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/task"
	"github.com/fedrank/fedrank/wire"
)

// Observer is told about every round, in round order, once its model has been
// evaluated. It runs on Simulate's goroutine; nil is allowed.
type Observer func(r RoundReport, totalRounds int)

// The virtual compute time of one local training run: a fixed cost plus a cost
// per local example and epoch (Config.Epochs, or 2 when the scenario does
// not say), times the peer's straggler factor. Virtual time only shapes the
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
// simulated federation: cfg.Peers trainers (peer-0000, peer-0001, ...; peer i
// trains on t's client i) and one aggregator, all node.Machine, driven by a
// discrete-event loop over a virtual clock and the network profile cfg.Net
// (see netProfile for the link model). Every message is encoded with
// wire.Marshal and decoded with wire.Unmarshal; an undecodable one is dropped
// and counted as rejected. The run is a function of cfg and t only: the same
// seed gives the same report (wall times aside) and model hash, whatever
// cfg.Workers and the machine's speed.
//
// Scale (see scale.go): a trainer gets a machine only while it takes part in
// a round; the others are followers that cost a few words each, and a
// broadcast becomes events only for the peers that need them. Peers without
// training data (t.ClientSamples is 0) are never selected; the run needs at
// least per_round peers with data.
//
// Protocol settings: a round closes early once ceil(quorum × per_round) updates
// are accepted, otherwise at round_timeout_ms, and any accepted update moves the
// model on (node.Config.MinUpdates = 1). With probability cfg.Crash a selected
// trainer crashes on receiving the round's announcement and restarts, with
// empty state, at the next announcement it receives.
//
// Faults (faults.go, all drawn from the seed): cfg.PartitionNet cuts peers
// off from the aggregator for scheduled rounds (a message across the cut is
// lost); cfg.Stragglers slows peers' training; cfg.Churn makes peers leave
// for a round, empty-handed; cfg.CrashAggregator and cfg.CrashAggregatorAt
// crash the aggregator mid-round. The aggregator then persists through an
// in-memory Badger store (every node.Persist action it emits, as
// node.Runtime does), crashes right after persisting the round's k-th
// accepted update (k = max(1, quorum/2)) and before acknowledging it, and
// after cfg.AggregatorDownMs restarts from its store with node.Recover and
// node.Restore: no accepted update is lost, and the round's model is the one
// the same updates give without the crash.
//
// With cfg.Attackers > 0, peers 0 .. AttackerCount-1 are attackers running
// cfg.Attack (see Attacks; t must implement task.Attackable), and a round's
// selection is drawn again while attackers are half of it or more, as in the
// FRL reference.
//
// Local training and evaluation run on cfg.Workers goroutines (0 = GOMAXPROCS):
// a node.Train action submits the job at once (the round's trainers train
// concurrently) and its result is taken when the virtual compute time has
// passed (2 ms + 0.05 ms per local example and epoch, times the peer's
// straggler factor). The global model of each round is evaluated on the pool
// too, overlapping the next round.
//
// In each RoundReport, sim_ms is the virtual time from the round's announcement
// to its close, wall_ms the real time the simulator spent on it (training
// included, evaluation excluded), bytes_up the bytes sent by trainers to the
// aggregator and bytes_down those sent by the aggregator, per recipient, lost
// messages included. Rejected counts the updates the aggregator refused while
// the round was open (in every incarnation, if it crashed), by reason, plus
// undecodable messages; late the round's updates that reached the
// aggregator after the round closed, while the next one was open (refused
// as wrong-round, so the next round's rejected counts them too; a round is
// reported once the next has closed); lost the round's updates that a trainer sent and
// the aggregator never got before the round closed (every copy lost by the
// network, a partition or a crashed aggregator; an update still in flight at
// the close is not lost, it may arrive late); dropped the accepted updates a
// robust aggregator left out of the model (aggregate.DropReporter), and
// dropped_attackers those of them from attackers; faults the faults that hit
// the round: "partition" (peers were cut off), "churn" (a selected peer was
// away), "straggler" (a selected peer slowed by --stragglers was still
// training at the close), "crash" (a selected trainer crashed),
// "aggregator-crash". obs sees each round in order, once it is evaluated.
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
	// trace, if set, receives a line per event and per action (trace_test.go).
	trace func(line string)
	// manualAggregator: the aggregator always has a store, and crashes and
	// restarts only when the test says so (crashAggregator, restartAggregator).
	manualAggregator bool
	// noPredecode leaves every coded update to the aggregator's own decoding.
	noPredecode bool
	// aggWorkers, if not 0, is the aggregator's Finalize goroutines
	// (aggregate.Parallel) instead of cfg.Workers.
	aggWorkers int
}

type evKind uint8

const (
	evStart evKind = iota
	evDeliver
	evTimer
	evTrainDone
	evRestart // the crashed aggregator restarts
)

type event struct {
	at   int64 // virtual ns
	seq  uint64
	kind evKind
	to   int // node index: 0 = aggregator, 1+i = peer i
	from int
	data []byte       // evDeliver
	tid  node.TimerID // evTimer
	gen  uint64       // evTimer: the timer's generation; evTrainDone, evRestart: the node's incarnation
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

// simNode is a node with a protocol machine: the aggregator, or a
// materialised trainer (scale.go).
type simNode struct {
	id          string
	client      int // -1 for the aggregator
	m           *node.Machine
	timers      map[node.TimerID]uint64
	incarnation uint64 // a fresh value per machine: drops a former machine's work
	samples     int64
	beh         behaviour
	// The training in progress (trainer): its round and when it ends.
	trainRound uint64
	trainUntil int64
}

// Faults that hit a round, in the order RoundReport.Faults lists them.
const (
	faultPartition = 1 << iota
	faultChurn
	faultStraggler
	faultCrash
	faultAggCrash
)

var faultNames = []string{"partition", "churn", "straggler", "crash", "aggregator-crash"}

// roundAcc accumulates what happens while a round is open.
type roundAcc struct {
	round       uint64
	startNs     int64
	wallStart   time.Time
	up, down    int64
	undecodable int
	faults      int
	// persisted counts the round's Persist{Update} actions over every
	// incarnation of the aggregator (it crashes at the k-th, once).
	persisted  int
	aggCrashed bool
	// carried are the rejections of crashed incarnations, by reason (the
	// restored machine's RoundClosed lists only its own).
	carried map[string]int
	rejects map[string]int // rejections acknowledged by the running incarnation
	// updates tracks the round's updates on their way to the aggregator, by peer.
	updates map[int]*updateTrack
}

type updateTrack struct {
	inFlight int  // copies on the network
	arrived  bool // a copy reached the running aggregator while the round was open
}

func newRoundAcc(r uint64, now int64) *roundAcc {
	return &roundAcc{round: r, startNs: now, wallStart: time.Now()}
}

type pendingRound struct {
	rr   RoundReport
	eval *evalJob
}

type sim struct {
	ctx  context.Context
	cfg  Config
	task task.Task
	agg  aggregate.Aggregator // the aggregator machine's strategy
	// pre, when the strategy has one, decodes coded updates on the pool as
	// soon as they are made, off the event loop where the aggregator adds
	// them: the same rankings, decoded in parallel (aggregate.Predecoder).
	pre  *aggregate.Predecoder
	opts simOptions
	obs  Observer
	// nodes[0] is the aggregator; nodes[1+p] is peer p's machine, nil while
	// it is a follower (scale.go).
	nodes        []*simNode
	ids          []string // peer IDs
	byID         map[string]int
	links        []link     // peers' links
	fol          []follower // peers' follower records
	aggLink      link
	lastStart    uint64 // the round of the latest RoundStart broadcast
	trainerCfg   node.Config
	aggCfg       node.Config
	eligible     []node.PeerID // peers with data, sorted; nil = all
	materialised int
	incarnations uint64
	// attack runs the attacker peers; nil without attackers.
	attack *attack

	faults    *faultPlan
	cut       []bool // peers cut off from the aggregator (nil: none)
	manualCut bool   // the cut was set by a test, not by the schedule
	store     *storage.Badger
	storeDir  string // the store's temporary directory
	aggDown   bool
	crashAtK  int // the aggregator crashes after persisting this many updates of a crash round
	// crashAfterUpdate > 0 arms a crash (manualAggregator): right after the
	// open round's update with this number is persisted.
	crashAfterUpdate int

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
	s, err := newSim(ctx, cfg, t, obs, opts)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.loop(); err != nil {
		return s.finish(), err
	}
	return s.finish(), nil
}

// newSim builds a simulation ready to run: its first event starts the aggregator.
func newSim(ctx context.Context, cfg Config, t task.Task, obs Observer, opts simOptions) (*sim, error) {
	start := time.Now()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n := t.NumClients(); n != cfg.Peers {
		return nil, &ConfigError{Field: "peers", Msg: fmt.Sprintf("%d, but the task has %d clients", cfg.Peers, n)}
	}
	faults, err := newFaultPlan(cfg)
	if err != nil {
		return nil, err
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
		ctx: ctx, cfg: cfg, task: t, opts: opts, obs: obs, faults: faults,
		net:   network{p: prof, rng: &splitmix.Source{State: splitmix.Derive(cfg.Seed, streamNet)}},
		evals: map[string]*evalJob{},
		start: start,
		rep: &Report{Scenario: cfg.Scenario, Seed: cfg.Seed, Config: cfg,
			Model:           ModelInfo{Name: orDefault(info.Model, info.Name), Params: info.Params},
			InitialAccuracy: initEval.Accuracy, InitialLoss: initEval.Loss},
	}
	if err := s.build(prof, initial); err != nil {
		s.close()
		return nil, err
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s.pool = newPool(workers)
	s.cur = newRoundAcc(1, 0)
	s.openRound(1)
	s.push(&event{kind: evStart, to: 0})
	return s, nil
}

// close stops the pool and closes the aggregator's store.
func (s *sim) close() {
	if s.pool != nil {
		s.pool.close()
		s.pool = nil
	}
	if s.store != nil {
		s.store.Close()
		s.store = nil
	}
	if s.storeDir != "" {
		os.RemoveAll(s.storeDir)
		s.storeDir = ""
	}
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// build creates the aggregator's machine and the peers' records.
func (s *sim) build(prof netProfile, initial []byte) error {
	cfg := s.cfg
	n := cfg.Peers
	s.ids = make([]string, n)
	s.byID = make(map[string]int, n+1)
	s.byID[aggregatorID] = 0
	for i := range s.ids {
		s.ids[i] = peerID(i)
		s.byID[s.ids[i]] = 1 + i
	}
	s.nodes = make([]*simNode, n+1)
	s.links = make([]link, n)
	s.fol = make([]follower, n)
	for i := range n {
		s.links[i] = link{up: prof.peerUp, down: prof.peerDown}
		if cfg.EdgeUplinkMbit > 0 && isEdgePeer(cfg.Seed, cfg.EdgePeers, i) {
			s.links[i].up = int64(math.Round(cfg.EdgeUplinkMbit * float64(mbit)))
		}
		s.fol[i].startAt = math.MaxInt64
	}
	s.aggLink = link{up: prof.aggUp, down: prof.aggDown}

	quorum := int(math.Ceil(cfg.Quorum*float64(cfg.PerRound) - 1e-9))
	quorum = min(max(quorum, 1), cfg.PerRound)
	s.crashAtK = max(1, quorum/2)
	maxModel := max(minModelBytes, 2*len(initial))
	s.maxMsg = max(maxModel, maxUpdateBytes) + envelopeSlack
	base := node.Config{
		Federation:     "fedrank-sim/" + orDefault(cfg.Scenario, "custom"),
		Aggregator:     aggregatorID,
		Members:        s.ids,
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
	if s.attack, err = newAttack(cfg, s.task, s.ids, base.Seed); err != nil {
		return err
	}
	s.eligible = eligibleMembers(s.ids, s.task.ClientSamples)
	if s.eligible != nil {
		if len(s.eligible) < cfg.PerRound {
			return &ConfigError{Field: "per_round", Msg: fmt.Sprintf("%d, but only %d of the %d peers hold training data", cfg.PerRound, len(s.eligible), n)}
		}
		if s.attack != nil {
			// The attack finds a round's attackers by drawing its selection again.
			s.attack.members = s.eligible
			honest := 0
			for _, id := range s.eligible {
				if !s.attack.isAttacker(id) {
					honest++
				}
			}
			if 2*honest <= cfg.PerRound {
				return &ConfigError{Field: "attackers", Msg: fmt.Sprintf("only %d of the %d peers with data are honest: no selection of %d has an honest majority", honest, len(s.eligible), cfg.PerRound)}
			}
		}
	}
	if s.attack != nil || s.eligible != nil {
		base.Select = s.selectPeers
	}
	s.trainerCfg = base
	s.trainerCfg.Role, s.trainerCfg.Members, s.trainerCfg.Select = node.RoleTrainer, nil, nil

	agg := base
	agg.ID, agg.Role = aggregatorID, node.RoleAggregator
	agg.InitialModel = initial
	agg.NewAggregator = func() (aggregate.Aggregator, error) {
		a, err := s.task.NewAggregator(cfg.Aggregator)
		if p, ok := a.(aggregate.Parallel); ok {
			// Finalize runs on the event loop while the pool may be
			// idle: it gets as many goroutines as training.
			w := cfg.Workers
			if s.opts.aggWorkers != 0 {
				w = s.opts.aggWorkers
			}
			p.SetWorkers(w)
		}
		s.agg = a // kept for its per-round metrics
		s.pre = nil
		if p, ok := a.(aggregate.Predecoding); ok && !s.opts.noPredecode {
			s.pre = p.Predecoder()
		}
		return a, err
	}
	s.aggCfg = agg
	var m *node.Machine
	if s.opts.manualAggregator || s.faults.crashesAggregator() {
		// The daemon's recovery path: a store, node.Recover, node.Restore.
		// On disk in a temporary directory, with Badger's low-memory
		// options: Badger's in-memory mode never frees what a commit
		// deletes (a 30-round run grew to ~1 GB of heap).
		if s.storeDir, err = os.MkdirTemp("", "fedrank-sim-aggregator-"); err != nil {
			return fmt.Errorf("simnet: aggregator store: %w", err)
		}
		if s.store, err = storage.Open(s.storeDir, storage.Options{LowMemory: true, GCInterval: -1}); err != nil {
			return fmt.Errorf("simnet: aggregator store: %w", err)
		}
		rec, err := node.Recover(s.store, agg)
		if err != nil {
			return fmt.Errorf("simnet: aggregator store: %w", err)
		}
		m, err = node.Restore(agg, rec)
	} else {
		m, err = node.New(agg)
	}
	if err != nil {
		return fmt.Errorf("simnet: %s: %w", agg.ID, err)
	}
	s.incarnations++
	s.nodes[0] = &simNode{id: aggregatorID, client: -1, m: m, timers: map[node.TimerID]uint64{}, incarnation: s.incarnations}
	return nil
}

// selectPeers is the aggregator's node.SelectFunc when some peers hold no
// data or some attack: a draw among the peers with data, redrawn while
// attackers are half of it or more.
func (s *sim) selectPeers(round uint64, members []node.PeerID, k int, seed uint64) []node.PeerID {
	if s.eligible != nil {
		members = s.eligible
	}
	if s.attack != nil {
		return s.attack.selectPeers(round, members, k, seed)
	}
	return node.SelectUniform(round, members, k, seed)
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
			s.done = true // nothing more will arrive late
			if err := s.flush(false); err != nil {
				return err
			}
			return s.ctx.Err()
		default:
		}
		if len(s.events) == 0 {
			return fmt.Errorf("simnet: stalled at %.3f ms with round %d open", float64(s.now)/float64(ms), s.cur.round)
		}
		if err := s.next(); err != nil {
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

// next handles the earliest event.
func (s *sim) next() error {
	e := heap.Pop(&s.events).(*event)
	s.now = e.at
	return s.handle(e)
}

func (s *sim) handle(e *event) error {
	n := s.nodes[e.to]
	switch e.kind {
	case evStart:
		s.tracef("%s aggregator: start", s.at())
		return s.step(e.to, node.Start{})
	case evDeliver:
		return s.deliver(e)
	case evTimer:
		if n == nil || n.m == nil {
			return nil // the machine is gone
		}
		if gen, ok := n.timers[e.tid]; !ok || gen != e.gen {
			return nil // cancelled, replaced, or set by a former machine
		}
		delete(n.timers, e.tid)
		if s.tracing() {
			s.tracef("%s %s: timer %s", s.at(), n.id, e.tid)
		}
		return s.step(e.to, node.TimerFired{ID: e.tid})
	case evTrainDone:
		if n == nil || n.incarnation != e.gen {
			return nil // crashed, left or dropped meanwhile: the work is lost
		}
		n.trainUntil = 0
		j := e.job
		select {
		case <-j.done:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
		if j.panicked != nil {
			return fmt.Errorf("simnet: training of %s in round %d panicked: %v", n.id, j.round, j.panicked)
		}
		if s.opts.trace != nil {
			if j.err != nil {
				s.tracef("%s %s: training of round %d failed: %v", s.at(), n.id, j.round, j.err)
			} else {
				s.tracef("%s %s: trained round %d: payload %x", s.at(), n.id, j.round, j.payload)
			}
		}
		return s.step(e.to, node.TrainDone{Round: j.round, ModelHash: j.modelHash, Payload: j.payload, Samples: n.samples, Err: j.err})
	case evRestart:
		if n.m != nil || n.incarnation != e.gen {
			return nil
		}
		return s.restartAggregator()
	}
	return nil
}

// reachable reports whether peer p can talk to the aggregator now (no
// partition cuts it off, it is not away).
func (s *sim) reachable(p int) bool {
	if s.cut != nil && s.cut[p] {
		return false
	}
	return !s.faults.away(p, s.cur.round)
}

func (s *sim) deliver(e *event) error {
	if e.to == 0 {
		return s.deliverToAggregator(e)
	}
	p := e.to - 1
	if !s.reachable(p) {
		s.traceDrop(e, "unreachable")
		return nil
	}
	msg, err := wire.Unmarshal(e.data, s.maxMsg)
	if err != nil {
		s.cur.undecodable++ // dropped, as the daemon's stream handler drops it
		return nil
	}
	n := s.nodes[e.to]
	rs := msg.GetRoundStart()
	if rs == nil || e.from != 0 {
		if n == nil {
			return nil // a follower has no use for it (a fresh machine finds it stale)
		}
		s.traceRecv(e, msg)
		return s.step(e.to, node.Recv{From: s.nodeID(e.from), Msg: msg})
	}
	// An announcement: the follower record decides whether the peer is up
	// and whether the announcement is news to it.
	r, id := rs.GetRound(), s.ids[p]
	f := s.resolve(p)
	if f.crashed > 0 && r <= f.crashed {
		s.traceDrop(e, "crashed")
		return nil
	}
	selected := slices.Contains(rs.GetSelected(), id)
	if n == nil {
		if f.crashed > 0 {
			f.crashed, f.round = 0, 0 // restarts empty
		}
		if r <= f.round {
			return nil // stale
		}
		if !selected {
			f.hear(r)
			return nil
		}
	}
	if selected && s.crashes(r, p) {
		s.tracef("%s %s: crashes on the announcement of round %d", s.at(), id, r)
		s.cur.faults |= faultCrash
		if n != nil {
			s.dematerialise(p, 0)
		}
		f.crashed, f.startAt = r, math.MaxInt64
		return nil
	}
	if n == nil {
		if n, err = s.materialise(p); err != nil {
			return err
		}
		if s.tracing() {
			s.tracef("%s %s: materialised (a machine for round %d)", s.at(), id, r)
		}
	}
	before := n.m.Status().Round
	s.traceRecv(e, msg)
	if err := s.step(e.to, node.Recv{From: aggregatorID, Msg: msg}); err != nil {
		return err
	}
	// A trainer left out of a new round, holding no model, is a follower again.
	if st := n.m.Status(); !selected && r > before && st.Round == r && st.ModelHash == nil && s.nodes[e.to] == n {
		s.dematerialise(p, r)
		if s.tracing() {
			s.tracef("  %s: a follower again (no machine)", id)
		}
	}
	return nil
}

func (s *sim) deliverToAggregator(e *event) error {
	p := e.from - 1
	if !s.reachable(p) {
		s.traceDrop(e, "unreachable")
		return nil
	}
	msg, err := wire.Unmarshal(e.data, s.maxMsg)
	if err != nil {
		s.cur.undecodable++
		return nil
	}
	u := msg.GetUpdate()
	tr := s.updateTrack(p, u)
	if tr != nil {
		tr.inFlight--
	}
	if s.aggDown {
		s.traceDrop(e, "aggregator down")
		return nil
	}
	if tr != nil {
		tr.arrived = true
	}
	s.traceRecv(e, msg)
	return s.step(0, node.Recv{From: s.ids[p], Msg: msg})
}

// updateTrack is the record of peer p's update u if u is for the open
// round (nil otherwise).
func (s *sim) updateTrack(p int, u *wire.Update) *updateTrack {
	if u == nil || u.GetRound() != s.cur.round {
		return nil
	}
	if s.cur.updates == nil {
		s.cur.updates = map[int]*updateTrack{}
	}
	t := s.cur.updates[p]
	if t == nil {
		t = &updateTrack{}
		s.cur.updates[p] = t
	}
	return t
}

func (s *sim) nodeID(i int) string {
	if i == 0 {
		return aggregatorID
	}
	return s.ids[i-1]
}

// crashes draws whether a selected trainer crashes for a round, independently
// of everything else (a hash of seed, round and client).
func (s *sim) crashes(round uint64, client int) bool {
	if s.cfg.Crash <= 0 {
		return false
	}
	r := splitmix.Source{State: splitmix.Derive(s.cfg.Seed, streamCrash, round, uint64(client))}
	return r.Float64() < s.cfg.Crash
}

func (s *sim) step(i int, ev node.Event) error {
	n := s.nodes[i]
	return s.apply(i, n.m.Step(s.now/ms, ev))
}

// errCrashed stops the aggregator's batch of actions where it crashed.
var errCrashed = errors.New("simnet: the aggregator crashed")

func (s *sim) apply(i int, acts []node.Action) error {
	err := s.applyActions(i, acts)
	if errors.Is(err, errCrashed) {
		return nil
	}
	return err
}

func (s *sim) applyActions(i int, acts []node.Action) error {
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
			if i == 0 {
				s.noteAck(a.Msg.GetUpdateAck())
			}
			if s.tracing() {
				s.tracef("  %s -> %s: %s", n.id, s.nodeID(to), wire.Describe(a.Msg))
			}
			s.transmit(i, to, b, a.Msg.GetUpdate())
		case node.Broadcast:
			if i != 0 {
				return fmt.Errorf("simnet: %s broadcast: only the aggregator broadcasts", n.id)
			}
			b, err := wire.Marshal(a.Msg)
			if err != nil {
				return fmt.Errorf("simnet: %s: %w", n.id, err)
			}
			s.broadcast(b, a.Msg)
		case node.SetTimer:
			s.timerGen++
			n.timers[a.ID] = s.timerGen
			s.push(&event{at: max(s.now, a.AtMs*ms), kind: evTimer, to: i, tid: a.ID, gen: s.timerGen})
		case node.CancelTimer:
			delete(n.timers, a.ID)
		case node.Train:
			if s.tracing() {
				s.tracef("  %s: train round %d from %s", n.id, a.Round, wire.ShortHash(a.ModelHash))
			}
			s.train(i, a)
		case node.RoundClosed:
			s.roundClosed(a)
		case node.Persist:
			// Trainers keep their state in memory (a crashed trainer restarts
			// empty); the aggregator persists when it can crash.
			if i != 0 || s.store == nil {
				continue
			}
			if err := s.persist(a); err != nil {
				return fmt.Errorf("simnet: aggregator store: %w", err)
			}
			if a.Update != nil {
				s.cur.persisted++
				if s.crashDue() {
					// Crash before acknowledging it: what the update's
					// persisting promised must survive.
					s.crashAggregator(!s.opts.manualAggregator)
					return errCrashed
				}
			}
		case node.Silent:
			// The simulated trainers have no silence timeout.
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

// crashDue reports whether the aggregator crashes now, having persisted
// the round's update number s.cur.persisted: the k-th of a round that the
// fault plan crashes, or the one a test armed (crashAfterUpdate).
func (s *sim) crashDue() bool {
	if s.opts.manualAggregator {
		if s.crashAfterUpdate > 0 && s.cur.persisted == s.crashAfterUpdate {
			s.crashAfterUpdate = 0
			return true
		}
		return false
	}
	return !s.cur.aggCrashed && s.cur.persisted == s.crashAtK && s.faults.aggregatorCrashes(s.cur.round)
}

// noteAck counts the aggregator's rejections as they leave: they survive a
// crash, which the machine's own list of the round's rejections does not.
func (s *sim) noteAck(ack *wire.UpdateAck) {
	if ack == nil || ack.GetAccepted() {
		return
	}
	acc := s.cur
	if acc.rejects == nil {
		acc.rejects = map[string]int{}
	}
	acc.rejects[ack.GetReason()]++
	if ack.GetReason() == string(node.RejectWrongRound) && ack.GetRound()+1 == acc.round {
		// Late for the round before, whose report is held until this one
		// closes. (An update later still is only in this round's rejected:
		// whether its round is reported yet depends on the evaluation's
		// progress, and the report must not.)
		for _, p := range s.pending {
			if p.rr.Round == ack.GetRound() {
				p.rr.Late++
			}
		}
	}
}

// persist carries out one of the aggregator's Persist actions on its store,
// as node.Runtime does.
func (s *sim) persist(p node.Persist) error {
	st := s.store
	switch {
	case p.Open != nil:
		s.tracef("  aggregator: persist open round %d", p.Open.Round)
		return st.Open(*p.Open)
	case p.Update != nil:
		s.tracef("  aggregator: persist update round %d seq %d from %s", p.Update.Round, p.Update.Seq, p.Update.From)
		return st.AddUpdate(*p.Update)
	case p.Commit != nil:
		c := *p.Commit
		c.Result.BytesUp, c.Result.BytesDown = s.cur.up, s.cur.down
		s.tracef("  aggregator: persist commit round %d model %s updates %d", c.Result.Round, wire.ShortHash(c.Result.ModelHash), len(c.Result.UpdateHashes))
		return st.Commit(c)
	case p.Trainer != nil:
		return st.PutTrainerRound(*p.Trainer)
	case p.Result != nil:
		return st.PutResult(*p.Result)
	case p.Model != nil:
		_, err := st.PutModel(p.Model)
		return err
	}
	return errors.New("empty Persist action")
}

// crashAggregator stops the aggregator: its machine, timers and the rest of
// the step's actions are gone; its store stays. With restart it comes back
// after the configured down time.
func (s *sim) crashAggregator(restart bool) {
	n := s.nodes[0]
	if n.m == nil {
		return
	}
	acc := s.cur
	s.tracef("%s aggregator: crashes (round %d, %d updates persisted)", s.at(), acc.round, acc.persisted)
	n.m, s.agg, s.aggDown = nil, nil, true
	clear(n.timers)
	s.incarnations++
	n.incarnation = s.incarnations
	acc.aggCrashed = true
	acc.faults |= faultAggCrash
	for r, c := range acc.rejects {
		if acc.carried == nil {
			acc.carried = map[string]int{}
		}
		acc.carried[r] += c
	}
	acc.rejects = nil
	if restart {
		s.push(&event{at: s.now + s.faults.downMs*ms, kind: evRestart, to: 0, gen: n.incarnation})
	}
}

// restartAggregator restores the aggregator from its store, as the daemon
// does after a crash, and starts it.
func (s *sim) restartAggregator() error {
	n := s.nodes[0]
	if n.m != nil {
		return errors.New("simnet: restart: the aggregator is running")
	}
	rec, err := node.Recover(s.store, s.aggCfg)
	if err != nil {
		return fmt.Errorf("simnet: aggregator recovery: %w", err)
	}
	m, err := node.Restore(s.aggCfg, rec)
	if err != nil {
		return fmt.Errorf("simnet: aggregator recovery: %w", err)
	}
	open := uint64(0)
	if rec.Open != nil {
		open = rec.Open.Round
	}
	s.tracef("%s aggregator: restarts from its store: round %d open, %d updates recovered", s.at(), open, len(rec.Updates))
	n.m, s.aggDown = m, false
	return s.step(0, node.Start{})
}

// transmit puts b on the network from node i to node j. u is the update b
// carries, if any (tracked for the round's lost updates).
func (s *sim) transmit(i, j int, b []byte, u *wire.Update) {
	from, to := s.nodeID(i), s.nodeID(j)
	if s.opts.corrupt != nil {
		b = s.opts.corrupt(from, to, b)
	}
	switch {
	case i == 0:
		s.cur.down += int64(len(b))
	case j == 0:
		s.cur.up += int64(len(b))
	}
	at, ok := s.net.send(s.now, s.link(i), s.link(j), len(b))
	if ok && !s.reachable(max(i, j)-1) {
		ok = false // across a partition, or to or from a peer that is away
	}
	if tr := s.updateTrack(i-1, u); tr != nil && ok {
		tr.inFlight++
	}
	if !ok {
		if s.tracing() {
			s.tracef("    (lost)")
		}
		return
	}
	s.push(&event{at: at, kind: evDeliver, to: j, from: i, data: b})
}

// broadcast sends the aggregator's b (msg) to every peer: each copy takes its
// time on the links and its chances with loss, in peer order, but only the
// copies to materialised peers and to the peers an announcement selects
// become events; the followers' copies of an announcement are recorded for
// them (scale.go).
func (s *sim) broadcast(b []byte, msg *wire.Envelope) {
	rs := msg.GetRoundStart()
	var sel map[int]bool
	prev := s.lastStart
	if rs != nil {
		sel = make(map[int]bool, len(rs.GetSelected()))
		for _, id := range rs.GetSelected() {
			if j, ok := s.byID[id]; ok && j > 0 {
				sel[j-1] = true
				if s.faults.away(j-1, s.cur.round) {
					s.cur.faults |= faultChurn
				}
			}
		}
		s.lastStart = rs.GetRound()
	}
	events, virtual, lost := 0, 0, 0
	for p := range s.ids {
		j := 1 + p
		bj := b
		if s.opts.corrupt != nil {
			bj = s.opts.corrupt(aggregatorID, s.ids[p], b)
		}
		s.cur.down += int64(len(bj))
		at, ok := s.net.send(s.now, &s.aggLink, &s.links[p], len(bj))
		if ok && !s.reachable(p) {
			ok = false
		}
		live := s.nodes[j] != nil || sel[p]
		if ok && !live && s.opts.corrupt != nil {
			// A follower would drop an undecodable copy, and the round count it.
			if _, err := wire.Unmarshal(bj, s.maxMsg); err != nil {
				s.cur.undecodable++
				ok = false
			}
		}
		if rs != nil {
			f := &s.fol[p]
			if f.startAt != math.MaxInt64 {
				f.hear(prev) // the previous announcement's copy: long arrived
			}
			if ok && !live {
				f.startAt = at
			}
		}
		switch {
		case !ok:
			lost++
		case live:
			events++
			s.push(&event{at: at, kind: evDeliver, to: j, from: 0, data: bj})
		default:
			virtual++
		}
	}
	if s.tracing() {
		s.tracef("  aggregator -> *: %s (%d events, %d to followers, %d lost)", wire.Describe(msg), events, virtual, lost)
	}
}

func (s *sim) link(i int) *link {
	if i == 0 {
		return &s.aggLink
	}
	return &s.links[i-1]
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
	beh, t, pre := n.beh, s.task, s.pre
	s.pool.submit(func() {
		defer close(j.done)
		defer func() {
			if p := recover(); p != nil {
				j.panicked = p
			}
		}()
		j.payload, j.err = beh.train(t, job)
		if pre != nil && j.err == nil {
			pre.Decode(job.Model, j.payload)
		}
	})
	d := s.trainNs(n)
	n.trainRound, n.trainUntil = a.Round, s.now+d
	s.push(&event{at: s.now + d, kind: evTrainDone, to: i, gen: n.incarnation, job: j})
}

// trainNs is the virtual compute time of n's local training.
func (s *sim) trainNs(n *simNode) int64 {
	epochs := int64(s.cfg.Epochs)
	if epochs <= 0 {
		epochs = trainEpochsAssumed
	}
	d := trainBaseNs + trainPerSampleNs*epochs*n.samples
	if f := s.faults.strag.speed(s.cfg.Seed, n.client); f != 1 {
		d = int64(float64(d) * f)
	}
	return d
}

// openRound applies the faults of round r as it opens: the partition
// schedule's cut, and the churn (materialised peers away in r leave, losing
// their machine).
func (s *sim) openRound(r uint64) {
	if !s.manualCut {
		s.cut = s.faults.cutIn(r)
	}
	if s.cut != nil && slices.Contains(s.cut, true) {
		s.cur.faults |= faultPartition
	}
	if s.faults.churn > 0 {
		for p := range s.ids {
			if s.nodes[1+p] != nil && s.faults.away(p, r) {
				s.tracef("%s %s: leaves (churn)", s.at(), s.ids[p])
				s.dematerialise(p, 0) // it comes back empty
			}
		}
	}
}

func (s *sim) roundClosed(rc node.RoundClosed) {
	acc := s.cur
	hash := hex.EncodeToString(rc.ModelHash)
	byReason := rejectedByReason(rc.Rejected, acc.undecodable)
	rejected := len(rc.Rejected) + acc.undecodable
	for r, c := range acc.carried {
		if byReason == nil {
			byReason = map[string]int{}
		}
		byReason[r] += c
		rejected += c
	}
	rr := RoundReport{
		Round:            rc.Round,
		Selected:         rc.Selected,
		Accepted:         rc.Accepted,
		Rejected:         rejected,
		RejectedByReason: byReason,
		BytesUp:          acc.up,
		BytesDown:        acc.down,
		SimMs:            float64(s.now-acc.startNs) / float64(ms),
		WallMs:           float64(time.Since(acc.wallStart).Nanoseconds()) / 1e6,
		ModelHash:        hash,
	}
	for _, t := range acc.updates {
		if !t.arrived && t.inFlight == 0 {
			rr.Lost++
		}
	}
	// Finalize ran in the step that emitted rc, so these are this round's.
	if m, ok := s.agg.(roundMetrics); ok && rc.Advanced {
		rr.Metrics = m.RoundMetrics()
	}
	if d, ok := s.agg.(dropReporter); ok && rc.Advanced {
		for _, id := range d.Dropped() {
			rr.Dropped++
			if s.attack != nil && s.attack.isAttacker(id) {
				rr.DroppedAttackers++
			}
		}
	}
	if s.cfg.EdgePeers > 0 {
		for _, id := range rc.SelectedPeers {
			if isEdgePeer(s.cfg.Seed, s.cfg.EdgePeers, s.byID[id]-1) {
				rr.EdgeSelected++
			}
		}
		for _, id := range rc.AcceptedPeers {
			if isEdgePeer(s.cfg.Seed, s.cfg.EdgePeers, s.byID[id]-1) {
				rr.EdgeAccepted++
			}
		}
	}
	if s.faults.strag != (straggling{}) {
		for _, id := range rc.SelectedPeers {
			if n := s.nodes[s.byID[id]]; n != nil && n.trainRound == rc.Round && n.trainUntil > s.now &&
				s.faults.strag.speed(s.cfg.Seed, n.client) > 1 {
				acc.faults |= faultStraggler
			}
		}
	}
	for i, name := range faultNames {
		if acc.faults&(1<<i) != 0 {
			rr.Faults = append(rr.Faults, name)
		}
	}
	if s.opts.trace != nil {
		s.tracef("  aggregator: round %d closed (%s): model %s, %d of %d accepted, rejected %d, late %d, lost %d, faults %v",
			rc.Round, rc.Reason, wire.ShortHash(rc.ModelHash), rc.Accepted, rc.Selected, rr.Rejected, rr.Late, rr.Lost, rr.Faults)
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
	s.cur = newRoundAcc(rc.Round+1, s.now)
	if rc.Round < uint64(s.cfg.Rounds) {
		s.openRound(rc.Round + 1)
	}
}

// dropReporter is aggregate.DropReporter: the robust aggregators that leave
// whole updates out of the model name their senders.
type dropReporter interface{ Dropped() []string }

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
// block it waits for all of them. A round is reported once the next round
// has closed too (or the run is over): until then, its updates may still
// arrive late.
func (s *sim) flush(block bool) error {
	for len(s.pending) > 0 {
		p := s.pending[0]
		if len(s.pending) == 1 && !s.done && !block {
			return nil
		}
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

// Tracing (trace_test.go): one line per event and per action.

func (s *sim) tracing() bool { return s.opts.trace != nil }

func (s *sim) tracef(format string, args ...any) {
	if s.opts.trace != nil {
		s.opts.trace(fmt.Sprintf(format, args...))
	}
}

// at is the virtual time, for trace lines.
func (s *sim) at() string { return fmt.Sprintf("%.3fms", float64(s.now)/float64(ms)) }

func (s *sim) traceRecv(e *event, msg *wire.Envelope) {
	if s.opts.trace != nil {
		s.tracef("%s %s <- %s: %s", s.at(), s.nodeID(e.to), s.nodeID(e.from), wire.Describe(msg))
	}
}

func (s *sim) traceDrop(e *event, why string) {
	if s.opts.trace == nil {
		return
	}
	what := "undecodable"
	if msg, err := wire.Unmarshal(e.data, s.maxMsg); err == nil {
		what = wire.Describe(msg)
	}
	s.tracef("%s %s -x %s: %s (%s)", s.at(), s.nodeID(e.from), s.nodeID(e.to), what, why)
}

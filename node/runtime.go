package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// Transport carries encoded envelopes between peers: p2p.Host in the daemon,
// an in-process network in tests. Both calls may block until ctx is done; the
// runtime calls them off its event loop.
type Transport interface {
	// Send delivers data to one peer (a direct stream in the daemon).
	Send(ctx context.Context, to PeerID, data []byte) error
	// Broadcast delivers data to every member (gossipsub in the daemon).
	Broadcast(ctx context.Context, data []byte) error
}

// TrainFunc runs a trainer's local training from model for round: the update
// payload and the number of local examples behind it.
type TrainFunc func(round uint64, model []byte) (payload []byte, samples int64, err error)

// EvalFunc scores a global model on the peer's test set.
type EvalFunc func(model []byte) (storage.Eval, error)

// RuntimeConfig is a Runtime's settings and dependencies.
type RuntimeConfig struct {
	// Machine is the protocol machine's config.
	Machine Config
	// Store holds the peer's state; the runtime restores the machine from it
	// and carries out every Persist action on it before the actions after it.
	Store storage.Store
	// Transport sends and broadcasts; messages received are handed to Deliver.
	Transport Transport
	// Train runs local training (trainers); it runs off the event loop.
	Train TrainFunc
	// Evaluate, optional, scores each round's global model (a peer with test
	// data); the scores go to the store, the metrics and Status.
	Evaluate EvalFunc
	// Logger receives structured logs (nil: slog.Default()).
	Logger *slog.Logger
	// Metrics, optional, receives counters and gauges.
	Metrics *Metrics
	// MaxMessageBytes bounds a message handed to Deliver (decoded with
	// wire.Unmarshal); 0 means MaxUpdateBytes or MaxModelBytes plus 1 MiB.
	MaxMessageBytes int
	// SendTimeout bounds one Send or Broadcast (default 30 s).
	SendTimeout time.Duration
	// Now is the clock (nil: time.Now). Protocol times are Unix milliseconds.
	Now func() time.Time
}

// Runtime drives a Machine with a real transport, a store and the wall clock:
// the daemon's driver. One goroutine (Run) owns the machine; messages,
// timers and training results reach it over channels, so the machine needs
// no locks, as in pubsub's event loop.
type Runtime struct {
	cfg    RuntimeConfig
	log    *slog.Logger
	m      *Machine
	inbox  chan inbound
	timerC chan timerFire
	trainC chan trainResult
	evalC  chan evalResult

	timers   map[TimerID]*time.Timer
	timerGen map[TimerID]uint64
	gen      uint64
	roundT0  time.Time // when the open round began (aggregator) or was announced (trainer)
	// up and down count the protocol bytes received and sent (per
	// recipient) since the open round began; a commit records them.
	up, down int64
	// stored is the sender of the update persisted by the step being
	// carried out (aggregator): an accepted UpdateAck to another peer
	// acknowledges again an update accepted before (a resend after a lost
	// ack), which is not counted as accepted twice.
	stored PeerID

	mu     sync.Mutex
	status RuntimeStatus
}

type inbound struct {
	from PeerID
	data []byte
}

type timerFire struct {
	id  TimerID
	gen uint64
}

type trainResult struct {
	ev  TrainDone
	dur time.Duration
}

type evalResult struct {
	round uint64
	eval  storage.Eval
	err   error
}

// RuntimeStatus is a snapshot of a running peer, for `node status`.
type RuntimeStatus struct {
	ID         string `json:"id"`
	Role       string `json:"role"`
	Federation string `json:"federation"`
	Round      uint64 `json:"round"`
	ModelHash  string `json:"model_hash,omitempty"`
	Done       bool   `json:"done"`
	// Training is true while local training runs.
	Training bool `json:"training,omitempty"`
	// SilentSince is when a trainer last heard the aggregator, while it has
	// been silent longer than the federation's silence timeout.
	SilentSince *time.Time `json:"silent_since,omitempty"`
	// LastResult is the last round result this peer committed or heard.
	LastResult *storage.Result `json:"last_result,omitempty"`
	// Accepted and RejectedByReason count updates since the daemon started
	// (aggregator).
	Accepted         int            `json:"accepted"`
	RejectedByReason map[string]int `json:"rejected_by_reason,omitempty"`
	// MessagesRejected counts received messages dropped before the
	// protocol saw them, by reason (undecodable, oversized, ...).
	MessagesRejected map[string]int `json:"messages_rejected,omitempty"`
	Counters         Counters       `json:"counters"`
	Error            string         `json:"error,omitempty"`
}

// NewRuntime validates cfg, restores the machine from cfg.Store (see
// Restore) and returns a runtime ready to Run. An aggregator stores its
// initial model first, so that round 1's model is always in its store.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Store == nil || cfg.Transport == nil {
		return nil, errors.New("node: runtime needs a Store and a Transport")
	}
	if cfg.Machine.Role == RoleTrainer && cfg.Train == nil {
		return nil, errors.New("node: a trainer's runtime needs a Train function")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 30 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = max(cfg.Machine.MaxUpdateBytes, cfg.Machine.MaxModelBytes, cfg.Machine.ChunkBytes) + 1<<20
	}
	if err := cfg.Machine.Validate(); err != nil {
		return nil, err
	}
	rec, err := Recover(cfg.Store, cfg.Machine)
	if err != nil {
		return nil, err
	}
	m, err := Restore(cfg.Machine, rec)
	if err != nil {
		return nil, err
	}
	r := &Runtime{
		cfg:      cfg,
		log:      cfg.Logger,
		m:        m,
		inbox:    make(chan inbound, 256),
		timerC:   make(chan timerFire, 16),
		trainC:   make(chan trainResult, 1),
		evalC:    make(chan evalResult, 4),
		timers:   map[TimerID]*time.Timer{},
		timerGen: map[TimerID]uint64{},
		roundT0:  cfg.Now(),
	}
	r.status = RuntimeStatus{
		ID: cfg.Machine.ID, Role: cfg.Machine.Role.String(), Federation: cfg.Machine.Federation,
		RejectedByReason: map[string]int{}, MessagesRejected: map[string]int{},
	}
	if last, err := cfg.Store.LastResult(); err == nil {
		r.status.LastResult = &last
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("node: reading the last result: %w", err)
	}
	if rec.Open != nil {
		cfg.Metrics.restored(len(rec.Updates))
		r.log.Info("recovered an open round", "round", rec.Open.Round, "accepted_updates", len(rec.Updates),
			"deadline", time.UnixMilli(rec.Open.DeadlineMs).UTC())
	}
	if t := rec.Trainer; t != nil {
		r.log.Info("recovered trainer state", "round", t.Round, "selected", t.Selected,
			"pending_update", t.Pending != nil, "acked", t.Acked)
	}
	r.snapshot()
	return r, nil
}

// Recover reads what a peer's store holds, for Restore: the daemon's
// runtime and the simulator's restarted aggregator recover through it. An
// aggregator's initial model is stored first, so that round 1's model is
// always in its store.
func Recover(st storage.Store, cfg Config) (Recovered, error) {
	var rec Recovered
	model := func(h []byte) ([]byte, error) {
		if len(h) == 0 {
			return nil, nil
		}
		b, err := st.Model(h)
		if err != nil {
			return nil, fmt.Errorf("node: model %x: %w", h, err)
		}
		return b, nil
	}
	if cfg.Role == RoleAggregator {
		if _, err := st.PutModel(cfg.InitialModel); err != nil {
			return rec, fmt.Errorf("node: storing the initial model: %w", err)
		}
		open, ok, err := st.OpenRound()
		if err != nil {
			return rec, err
		}
		if last, err := st.LastResult(); err == nil {
			rec.Last = &last
		} else if !errors.Is(err, storage.ErrNotFound) {
			return rec, err
		}
		switch {
		case ok:
			rec.Open = &open
			if rec.Model, err = model(open.ModelHash); err != nil {
				return rec, err
			}
			if rec.PrevModel, err = model(open.PrevModelHash); err != nil {
				return rec, err
			}
			if rec.Updates, err = st.Updates(open.Round); err != nil {
				return rec, err
			}
		case rec.Last != nil:
			if rec.Model, err = model(rec.Last.ModelHash); err != nil {
				return rec, err
			}
		}
		return rec, nil
	}
	tr, ok, err := st.TrainerRound()
	if err != nil || !ok {
		return rec, err
	}
	rec.Trainer = &tr
	if b, err := st.Model(tr.ModelHash); err == nil {
		rec.TrainerModel = b
	} else if !errors.Is(err, storage.ErrNotFound) {
		return rec, err
	}
	return rec, nil
}

// Deliver hands a message received from a peer to the runtime. It blocks
// while the runtime's inbox is full (backpressure on the transport) until ctx
// is done. Safe for concurrent use.
func (r *Runtime) Deliver(ctx context.Context, from PeerID, data []byte) {
	select {
	case r.inbox <- inbound{from, data}:
	case <-ctx.Done():
	}
}

// Status returns a snapshot of the peer. Safe for concurrent use.
func (r *Runtime) Status() RuntimeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.RejectedByReason = cloneMap(s.RejectedByReason)
	s.MessagesRejected = cloneMap(s.MessagesRejected)
	if s.LastResult != nil {
		lr := *s.LastResult
		s.LastResult = &lr
	}
	return s
}

func cloneMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Run drives the machine until ctx is done, or until a store write fails
// (the runtime then stops rather than send what it could not persist). A
// finished federation keeps its peer running: it serves models and status.
func (r *Runtime) Run(ctx context.Context) error {
	defer r.stopTimers()
	if err := r.step(ctx, Start{}); err != nil {
		return r.failed(err)
	}
	for {
		var ev Event
		select {
		case <-ctx.Done():
			return nil
		case in := <-r.inbox:
			msg, err := wire.Unmarshal(in.data, r.cfg.MaxMessageBytes)
			if err != nil {
				reason := "malformed"
				switch {
				case errors.Is(err, wire.ErrTooLarge):
					reason = "oversized"
				case errors.Is(err, wire.ErrNoBody):
					reason = "no-body"
				}
				r.rejectMessage(in.from, reason, err)
				continue
			}
			if f := msg.GetFederation(); f != r.cfg.Machine.Federation {
				r.rejectMessage(in.from, "wrong-federation", fmt.Errorf("federation %q", f))
				continue
			}
			r.cfg.Metrics.received(wire.Kind(msg), len(in.data))
			r.up += int64(len(in.data))
			ev = Recv{From: in.from, Msg: msg}
		case f := <-r.timerC:
			if r.timerGen[f.id] != f.gen {
				continue // replaced or cancelled since
			}
			delete(r.timers, f.id)
			delete(r.timerGen, f.id)
			ev = TimerFired{ID: f.id}
		case tr := <-r.trainC:
			r.setTraining(false)
			r.cfg.Metrics.trained(tr.dur, tr.ev.Err)
			if tr.ev.Err != nil {
				r.log.Error("local training failed", "round", tr.ev.Round, "err", tr.ev.Err)
			} else {
				r.log.Info("local training done", "round", tr.ev.Round, "samples", tr.ev.Samples,
					"payload_bytes", len(tr.ev.Payload), "seconds", tr.dur.Seconds())
			}
			ev = tr.ev
		case e := <-r.evalC:
			r.evaluated(e)
			continue
		}
		if err := r.step(ctx, ev); err != nil {
			return r.failed(err)
		}
	}
}

func (r *Runtime) failed(err error) error {
	r.log.Error("runtime stopped", "err", err)
	r.mu.Lock()
	r.status.Error = err.Error()
	r.mu.Unlock()
	return err
}

func (r *Runtime) rejectMessage(from PeerID, reason string, err error) {
	r.log.Warn("message rejected", "from", from, "reason", reason, "err", err)
	r.cfg.Metrics.messageRejected(reason)
	r.mu.Lock()
	r.status.MessagesRejected[reason]++
	r.mu.Unlock()
}

// step feeds one event to the machine and carries out its actions in order.
func (r *Runtime) step(ctx context.Context, ev Event) error {
	now := r.cfg.Now()
	r.stored = ""
	for _, a := range r.m.Step(now.UnixMilli(), ev) {
		if err := r.do(ctx, now, a); err != nil {
			return err
		}
	}
	r.snapshot()
	return nil
}

func (r *Runtime) do(ctx context.Context, now time.Time, a Action) error {
	switch a := a.(type) {
	case Persist:
		start := time.Now()
		if err := r.persist(a); err != nil {
			return fmt.Errorf("node: persist: %w", err)
		}
		r.cfg.Metrics.persisted(time.Since(start))
		if a.Update != nil {
			r.stored = a.Update.From
		}
	case Send:
		if ack := a.Msg.GetUpdateAck(); ack != nil {
			r.acked(a.To, ack)
		}
		r.send(ctx, a.To, a.Msg)
	case Broadcast:
		r.send(ctx, "", a.Msg)
		if rs := a.Msg.GetRoundStart(); rs != nil {
			r.roundT0 = now
			r.cfg.Metrics.setRound(rs.GetRound())
			r.log.Info("round open", "round", rs.GetRound(), "model", shortHash(rs.GetModelHash()),
				"selected", len(rs.GetSelected()), "deadline", time.UnixMilli(rs.GetDeadlineMs()).UTC())
		}
	case SetTimer:
		r.setTimer(ctx, now, a)
	case CancelTimer:
		if t := r.timers[a.ID]; t != nil {
			t.Stop()
		}
		delete(r.timers, a.ID)
		delete(r.timerGen, a.ID)
	case Train:
		r.train(ctx, a)
	case RoundClosed:
		r.roundClosed(ctx, now, a)
	case Silent:
		since := time.UnixMilli(a.SinceMs)
		r.log.Warn("the aggregator has been silent", "aggregator", r.cfg.Machine.Aggregator,
			"since", since.UTC(), "for", now.Sub(since).Round(time.Second).String())
		r.cfg.Metrics.silent()
	case Done:
		if a.Err != nil {
			return a.Err
		}
		r.log.Info("federation finished", "rounds", r.cfg.Machine.Rounds)
	default:
		return fmt.Errorf("node: unknown action %T", a)
	}
	return nil
}

func (r *Runtime) persist(p Persist) error {
	st := r.cfg.Store
	switch {
	case p.Open != nil:
		return st.Open(*p.Open)
	case p.Update != nil:
		return st.AddUpdate(*p.Update)
	case p.Commit != nil:
		c := *p.Commit
		c.Result.BytesUp, c.Result.BytesDown = r.up, r.down
		r.up, r.down = 0, 0
		return st.Commit(c)
	case p.Trainer != nil:
		return st.PutTrainerRound(*p.Trainer)
	case p.Result != nil:
		res := *p.Result
		if err := st.PutResult(res); err != nil {
			return err
		}
		r.mu.Lock()
		r.status.LastResult = &res
		r.mu.Unlock()
		return nil
	case p.Model != nil:
		_, err := st.PutModel(p.Model)
		return err
	}
	return errors.New("empty Persist action")
}

// acked logs and counts the aggregator's verdict on an update as it leaves.
// An acceptance is counted once: the ack of an update persisted by this
// step; an ack sent again for a resent update is only logged.
func (r *Runtime) acked(to PeerID, ack *wire.UpdateAck) {
	again := ack.GetAccepted() && to != r.stored
	r.mu.Lock()
	switch {
	case again:
	case ack.GetAccepted():
		r.status.Accepted++
	default:
		r.status.RejectedByReason[ack.GetReason()]++
	}
	r.mu.Unlock()
	if again {
		r.log.Info("update acknowledged again (a resend of an accepted update)", "from", to, "round", ack.GetRound())
		return
	}
	if ack.GetAccepted() {
		r.log.Info("update accepted", "from", to, "round", ack.GetRound())
		r.cfg.Metrics.updateAccepted()
		return
	}
	detail := ""
	if rej := r.m.lastRejection(); rej != nil && rej.From == to {
		detail = rej.Detail
	}
	r.log.Warn("update rejected", "from", to, "round", ack.GetRound(), "reason", ack.GetReason(), "detail", detail)
	r.cfg.Metrics.updateRejected(ack.GetReason())
}

// send marshals msg and sends it (to "" broadcasts) off the event loop.
func (r *Runtime) send(ctx context.Context, to PeerID, msg *wire.Envelope) {
	b, err := wire.Marshal(msg)
	if err != nil {
		r.log.Error("cannot encode a message", "kind", wire.Kind(msg), "err", err)
		return
	}
	kind := wire.Kind(msg)
	if to == "" {
		r.down += int64(len(b) * max(len(r.cfg.Machine.Members), 1))
	} else {
		r.down += int64(len(b))
	}
	go func() {
		sctx, cancel := context.WithTimeout(ctx, r.cfg.SendTimeout)
		defer cancel()
		var err error
		if to == "" {
			err = r.cfg.Transport.Broadcast(sctx, b)
		} else {
			err = r.cfg.Transport.Send(sctx, to, b)
		}
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("send failed", "to", to, "kind", kind, "bytes", len(b), "err", err)
			}
			r.cfg.Metrics.sendFailed(kind)
			return
		}
		r.cfg.Metrics.sent(kind, len(b))
	}()
}

func (r *Runtime) setTimer(ctx context.Context, now time.Time, a SetTimer) {
	if t := r.timers[a.ID]; t != nil {
		t.Stop()
	}
	r.gen++
	f := timerFire{a.ID, r.gen}
	r.timerGen[a.ID] = f.gen
	d := time.UnixMilli(a.AtMs).Sub(now)
	r.timers[a.ID] = time.AfterFunc(max(d, 0), func() {
		select {
		case r.timerC <- f:
		case <-ctx.Done():
		}
	})
}

func (r *Runtime) stopTimers() {
	for _, t := range r.timers {
		t.Stop()
	}
}

func (r *Runtime) train(ctx context.Context, a Train) {
	r.setTraining(true)
	r.log.Info("local training", "round", a.Round, "model", shortHash(a.ModelHash))
	model := slices.Clone(a.Model) // the task must not write to the machine's copy
	go func() {
		start := time.Now()
		payload, samples, err := r.cfg.Train(a.Round, model)
		res := trainResult{ev: TrainDone{Round: a.Round, ModelHash: a.ModelHash, Payload: payload, Samples: samples, Err: err}, dur: time.Since(start)}
		select {
		case r.trainC <- res:
		case <-ctx.Done():
		}
	}()
}

func (r *Runtime) setTraining(on bool) {
	r.mu.Lock()
	r.status.Training = on
	r.mu.Unlock()
}

func (r *Runtime) roundClosed(ctx context.Context, now time.Time, rc RoundClosed) {
	reasons := countReasons(rc.Rejected)
	r.log.Info("round closed", "round", rc.Round, "how", rc.Reason, "advanced", rc.Advanced,
		"model", shortHash(rc.ModelHash), "selected", rc.Selected, "accepted", rc.Accepted,
		"rejected", len(rc.Rejected), "seconds", now.Sub(r.roundT0).Seconds())
	r.cfg.Metrics.roundClosed(now.Sub(r.roundT0), rc.Advanced)
	res := storage.Result{
		Round: rc.Round, ModelHash: rc.ModelHash, Advanced: rc.Advanced, Reason: rc.Reason,
		Selected: rc.SelectedPeers, AcceptedPeers: rc.AcceptedPeers, Accepted: rc.Accepted,
		Rejected: reasons, StartedMs: rc.StartedMs, ClosedMs: rc.ClosedMs,
	}
	r.mu.Lock()
	r.status.LastResult = &res
	r.mu.Unlock()
	if r.cfg.Evaluate == nil {
		return
	}
	model, round := rc.Model, rc.Round
	go func() {
		e, err := r.cfg.Evaluate(model)
		select {
		case r.evalC <- evalResult{round, e, err}:
		case <-ctx.Done():
		}
	}()
}

func (r *Runtime) evaluated(e evalResult) {
	if e.err != nil {
		r.log.Error("evaluation failed", "round", e.round, "err", e.err)
		return
	}
	r.log.Info("model evaluated", "round", e.round, "accuracy", e.eval.Accuracy, "loss", e.eval.Loss, "samples", e.eval.Samples)
	r.cfg.Metrics.evaluated(e.eval)
	if err := r.cfg.Store.PutEval(e.round, e.eval); err != nil {
		r.log.Error("storing an evaluation", "round", e.round, "err", err)
	}
	r.mu.Lock()
	if lr := r.status.LastResult; lr != nil && lr.Round == e.round {
		ev := e.eval
		lr.Eval = &ev
	}
	r.mu.Unlock()
}

// snapshot copies the machine's state into the status served to readers.
func (r *Runtime) snapshot() {
	s := r.m.Status()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Round, r.status.Done, r.status.Counters = s.Round, s.Done, s.Counters
	r.status.ModelHash = hex.EncodeToString(s.ModelHash)
	r.status.SilentSince = nil
	if s.SilentSinceMs > 0 {
		t := time.UnixMilli(s.SilentSinceMs).UTC()
		r.status.SilentSince = &t
	}
	r.cfg.Metrics.silence(s.SilentSinceMs > 0)
	if s.Role == RoleAggregator {
		r.cfg.Metrics.openRoundUpdates(s.Accepted)
	}
}

func shortHash(h []byte) string {
	if len(h) > 4 {
		h = h[:4]
	}
	return hex.EncodeToString(h)
}

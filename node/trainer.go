package node

import (
	"slices"

	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// trainerState is a trainer's side of the protocol: it follows the rounds the
// aggregator announces and takes part in those it is selected for.
type trainerState struct {
	round      uint64 // last round announced by the aggregator
	selected   bool   // selected in round
	roundHash  []byte // the round's model hash
	deadlineMs int64  // the round's deadline (aggregator's clock)

	model, modelHash []byte // the model received and verified for the last round announced, if any

	waiting    bool   // a ModelRequest for roundHash is unanswered
	partial    []byte // the chunks of roundHash received so far (waiting)
	training   bool   // a Train for round is running
	modelDelay int64  // next ModelRequest resend delay

	pending     *wire.Envelope // the round's Update, until acknowledged
	acked       bool           // the round's Update was acknowledged
	updateDelay int64          // next Update resend delay

	lastResult uint64 // the highest round whose result was persisted

	heardMs  int64 // when the aggregator was last heard (or the machine started)
	silentMs int64 // > 0: the silence reported, since heardMs
}

func (m *Machine) stepTrainer(now int64, ev Event) []Action {
	t := m.tr
	switch ev := ev.(type) {
	case Start:
		return m.startTrainer(now)
	case Recv:
		if ev.From != m.cfg.Aggregator || ev.Msg.GetFederation() != m.cfg.Federation {
			m.c.Ignored++
			return nil
		}
		acts := m.heard(now)
		switch body := ev.Msg.GetBody().(type) {
		case *wire.Envelope_RoundStart:
			return append(acts, m.onRoundStart(now, body.RoundStart)...)
		case *wire.Envelope_ModelResponse:
			return append(acts, m.onModelResponse(now, body.ModelResponse)...)
		case *wire.Envelope_UpdateAck:
			return append(acts, m.onUpdateAck(body.UpdateAck)...)
		case *wire.Envelope_RoundResult:
			return append(acts, m.onRoundResult(body.RoundResult)...)
		default:
			m.c.Ignored++
		}
		return acts
	case TimerFired:
		if ev.ID.Kind == TimerSilence {
			return m.onSilence(now)
		}
		return m.onTrainerTimer(now, ev.ID)
	case TrainDone:
		if ev.Round != t.round || !t.training || !equalHash(ev.ModelHash, t.roundHash) {
			m.c.Stale++ // a round that is over: its update would be rejected
			return nil
		}
		t.training = false
		if ev.Err != nil {
			m.c.TrainErrors++
			return nil
		}
		u := &wire.Update{Round: t.round, ModelHash: t.roundHash, Payload: ev.Payload, Samples: ev.Samples}
		if m.cfg.Sign != nil {
			sig, err := m.cfg.Sign(SignedUpdate(m.cfg.Federation, t.round, t.roundHash, Hash(ev.Payload)))
			if err != nil {
				m.c.TrainErrors++ // an update we cannot sign would be rejected
				return nil
			}
			u.Signature = sig
		}
		t.pending = m.msg(u)
		t.updateDelay = m.retryMs
		// The update is on disk before it leaves: a trainer restarted before
		// its ack resends the very same bytes (never a second, different one).
		acts := []Action{Persist{Trainer: t.record()}, Send{To: m.cfg.Aggregator, Msg: t.pending}}
		return t.retry(now, TimerUpdateRetry, t.updateDelay, acts)
	}
	return nil
}

// startTrainer arms the silence check and, for a machine restored in the
// middle of a round it was selected for, picks the round up where it was:
// resend the unacknowledged update, or fetch the model and train again.
func (m *Machine) startTrainer(now int64) []Action {
	t := m.tr
	t.heardMs = now
	var acts []Action
	if m.cfg.SilenceMs > 0 {
		acts = append(acts, SetTimer{ID: TimerID{Kind: TimerSilence}, AtMs: now + m.cfg.SilenceMs})
	}
	if !t.selected || t.acked || (t.deadlineMs > 0 && now >= t.deadlineMs) {
		return acts
	}
	switch {
	case t.pending != nil:
		t.updateDelay = m.retryMs
		return t.retry(now, TimerUpdateRetry, t.updateDelay, append(acts, Send{To: m.cfg.Aggregator, Msg: t.pending}))
	case equalHash(t.modelHash, t.roundHash):
		t.training = true
		return append(acts, Train{Round: t.round, ModelHash: t.modelHash, Model: t.model})
	}
	t.waiting, t.partial, t.modelDelay = true, nil, m.retryMs
	return append(acts, m.requestModel(now)...)
}

// heard notes a message from the aggregator. The silence timer is not moved
// on every message: when it fires early it is set again from heardMs. After a
// reported silence it is armed again here.
func (m *Machine) heard(now int64) []Action {
	t := m.tr
	t.heardMs = now
	if t.silentMs == 0 || m.cfg.SilenceMs <= 0 {
		return nil
	}
	t.silentMs = 0
	return []Action{SetTimer{ID: TimerID{Kind: TimerSilence}, AtMs: now + m.cfg.SilenceMs}}
}

func (m *Machine) onSilence(now int64) []Action {
	t := m.tr
	switch {
	case m.done || m.cfg.SilenceMs <= 0 || t.silentMs > 0:
		m.c.Stale++
		return nil
	case now-t.heardMs < m.cfg.SilenceMs:
		return []Action{SetTimer{ID: TimerID{Kind: TimerSilence}, AtMs: t.heardMs + m.cfg.SilenceMs}}
	}
	t.silentMs = now
	return []Action{Silent{SinceMs: t.heardMs}}
}

// record is what the store keeps of the trainer's round.
func (t *trainerState) record() *storage.TrainerRound {
	r := &storage.TrainerRound{
		Round:      t.round,
		ModelHash:  t.roundHash,
		Selected:   t.selected,
		DeadlineMs: t.deadlineMs,
		Acked:      t.acked,
	}
	if u := t.pending.GetUpdate(); u != nil {
		r.Pending = &storage.Update{
			Round:     u.GetRound(),
			ModelHash: u.GetModelHash(),
			Payload:   u.GetPayload(),
			Samples:   u.GetSamples(),
			Signature: u.GetSignature(),
			Hash:      Hash(u.GetPayload()),
		}
	}
	return r
}

// retry appends a resend timer after delay, unless it would fire after the
// round's deadline, when a resend could only be rejected.
func (t *trainerState) retry(now int64, kind TimerKind, delay int64, acts []Action) []Action {
	if at := now + delay; t.deadlineMs <= 0 || at < t.deadlineMs {
		acts = append(acts, SetTimer{ID: TimerID{kind, t.round}, AtMs: at})
	}
	return acts
}

// endRound forgets the round's pending work and cancels its timers.
func (t *trainerState) endRound(acts []Action) []Action {
	if t.waiting {
		acts = append(acts, CancelTimer{ID: TimerID{TimerModelRetry, t.round}})
	}
	if t.pending != nil {
		acts = append(acts, CancelTimer{ID: TimerID{TimerUpdateRetry, t.round}})
	}
	t.waiting, t.partial, t.training, t.pending = false, nil, false, nil
	return acts
}

func (m *Machine) onRoundStart(now int64, rs *wire.RoundStart) []Action {
	t := m.tr
	var prev []Action
	if p := rs.GetPrevious(); p != nil && p.GetRound()+1 == rs.GetRound() && p.GetRound() > t.lastResult {
		// The result of the round before, in case we missed its announcement.
		prev = m.onRoundResult(p)
	}
	return append(prev, m.roundStart(now, rs)...)
}

func (m *Machine) roundStart(now int64, rs *wire.RoundStart) []Action {
	t := m.tr
	if rs.GetRound() == t.round && t.pending != nil && equalHash(rs.GetModelHash(), t.roundHash) {
		// The round announced again (the aggregator restarted, or resends to
		// peers it has not heard from): our update may not have reached it.
		m.c.Resends++
		return []Action{Send{To: m.cfg.Aggregator, Msg: t.pending}}
	}
	if rs.GetRound() <= t.round {
		m.c.Stale++ // a repeated or reordered announcement
		return nil
	}
	acts := t.endRound(nil)
	t.round, t.roundHash, t.deadlineMs = rs.GetRound(), slices.Clone(rs.GetModelHash()), rs.GetDeadlineMs()
	t.acked = false
	if !equalHash(t.modelHash, t.roundHash) {
		// Only the round's model is of use from now on: let go of an old one
		// (a simulation holds a thousand trainers).
		t.model, t.modelHash = nil, nil
	}
	t.selected = slices.Contains(rs.GetSelected(), m.cfg.ID)
	if !t.selected {
		return acts
	}
	acts = append(acts, Persist{Trainer: t.record()})
	if equalHash(t.modelHash, t.roundHash) {
		t.training = true
		return append(acts, Train{Round: t.round, ModelHash: t.modelHash, Model: t.model})
	}
	t.waiting, t.partial, t.modelDelay = true, nil, m.retryMs
	return append(acts, m.requestModel(now)...)
}

// requestModel asks for the round's model from the first byte not yet received.
func (m *Machine) requestModel(now int64) []Action {
	t := m.tr
	req := &wire.ModelRequest{ModelHash: t.roundHash, Offset: uint64(len(t.partial))}
	return t.retry(now, TimerModelRetry, t.modelDelay, []Action{Send{To: m.cfg.Aggregator, Msg: m.msg(req)}})
}

func (m *Machine) onModelResponse(now int64, resp *wire.ModelResponse) []Action {
	t := m.tr
	total, off, chunk := resp.GetTotalSize(), resp.GetOffset(), resp.GetModel()
	if total == 0 && off == 0 {
		total = uint64(len(chunk)) // a whole model from a sender that does not chunk
	}
	whole := off == 0 && uint64(len(chunk)) == total
	if total > uint64(m.cfg.MaxModelBytes) || off+uint64(len(chunk)) > total ||
		(whole && !equalHash(Hash(chunk), resp.GetModelHash())) {
		m.c.BadModels++ // larger than we accept, inconsistent, or not what it claims: ask no more
		return nil
	}
	if !t.waiting || !equalHash(resp.GetModelHash(), t.roundHash) || off != uint64(len(t.partial)) {
		m.c.Stale++ // an answer to a resent request, or for an earlier round
		return nil
	}
	if len(chunk) == 0 && off < total {
		m.c.BadModels++
		return nil
	}
	if whole {
		t.partial = chunk // no copy
	} else {
		if t.partial == nil {
			t.partial = make([]byte, 0, total)
		}
		t.partial = append(t.partial, chunk...)
	}
	if uint64(len(t.partial)) < total {
		// More to come: ask for the next chunk now, with a fresh resend delay.
		t.modelDelay = m.retryMs
		return append([]Action{CancelTimer{ID: TimerID{TimerModelRetry, t.round}}}, m.requestModel(now)...)
	}
	model := t.partial
	t.partial = nil
	if h := Hash(model); !equalHash(h, t.roundHash) {
		// Corrupted or forged: never train from it. The pending resend timer
		// starts the transfer over (not at once: a forger cannot make us loop).
		m.c.BadModels++
		return nil
	}
	t.model, t.modelHash = model, t.roundHash
	t.waiting, t.training = false, true
	return []Action{
		CancelTimer{ID: TimerID{TimerModelRetry, t.round}},
		Persist{Model: t.model},
		Train{Round: t.round, ModelHash: t.modelHash, Model: t.model},
	}
}

func (m *Machine) onUpdateAck(ack *wire.UpdateAck) []Action {
	t := m.tr
	if t.pending == nil || ack.GetRound() != t.round {
		m.c.Stale++
		return nil
	}
	if ack.GetAccepted() {
		m.c.Acked++
	} else {
		m.c.Nacked++ // resending would be rejected again
	}
	t.pending, t.acked = nil, true
	return []Action{CancelTimer{ID: TimerID{TimerUpdateRetry, t.round}}, Persist{Trainer: t.record()}}
}

func (m *Machine) onRoundResult(rr *wire.RoundResult) []Action {
	t := m.tr
	var acts []Action
	if rr.GetRound() == t.round {
		acts = t.endRound(nil) // the round is closed: nothing we send counts any more
	}
	if rr.GetRound() > t.lastResult {
		t.lastResult = rr.GetRound()
	} else {
		m.c.Stale++ // heard already (a rebroadcast, or a RoundStart's previous)
		return acts
	}
	acts = append(acts, Persist{Result: &storage.Result{
		Round:        rr.GetRound(),
		ModelHash:    slices.Clone(rr.GetModelHash()),
		UpdateHashes: rr.GetUpdateHashes(),
		Advanced:     len(rr.GetUpdateHashes()) > 0,
		Accepted:     int(rr.GetAccepted()),
	}})
	if m.cfg.Rounds > 0 && rr.GetRound() >= m.cfg.Rounds && !m.done {
		m.done = true
		acts = append(acts, Done{})
	}
	return acts
}

func (m *Machine) onTrainerTimer(now int64, id TimerID) []Action {
	t := m.tr
	if id.Round != t.round || (t.deadlineMs > 0 && now >= t.deadlineMs) {
		m.c.Stale++
		return nil
	}
	switch id.Kind {
	case TimerModelRetry:
		if !t.waiting {
			break
		}
		m.c.Resends++
		t.modelDelay *= 2
		return m.requestModel(now)
	case TimerUpdateRetry:
		if t.pending == nil {
			break
		}
		m.c.Resends++
		t.updateDelay *= 2
		return t.retry(now, TimerUpdateRetry, t.updateDelay, []Action{Send{To: m.cfg.Aggregator, Msg: t.pending}})
	}
	m.c.Stale++
	return nil
}

package node

import (
	"slices"

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

	waiting    bool  // a ModelRequest for roundHash is unanswered
	training   bool  // a Train for round is running
	modelDelay int64 // next ModelRequest resend delay

	pending     *wire.Envelope // the round's Update, until acknowledged
	updateDelay int64          // next Update resend delay
}

func (m *Machine) stepTrainer(now int64, ev Event) []Action {
	t := m.tr
	switch ev := ev.(type) {
	case Start:
		return nil // trainers wait for the aggregator's RoundStart
	case Recv:
		if ev.From != m.cfg.Aggregator || ev.Msg.GetFederation() != m.cfg.Federation {
			m.c.Ignored++
			return nil
		}
		switch body := ev.Msg.GetBody().(type) {
		case *wire.Envelope_RoundStart:
			return m.onRoundStart(now, body.RoundStart)
		case *wire.Envelope_ModelResponse:
			return m.onModelResponse(body.ModelResponse)
		case *wire.Envelope_UpdateAck:
			return m.onUpdateAck(body.UpdateAck)
		case *wire.Envelope_RoundResult:
			return m.onRoundResult(body.RoundResult)
		default:
			m.c.Ignored++
		}
	case TimerFired:
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
		t.pending = m.msg(&wire.Update{Round: t.round, ModelHash: t.roundHash, Payload: ev.Payload, Samples: ev.Samples})
		t.updateDelay = m.retryMs
		return t.retry(now, TimerUpdateRetry, t.updateDelay, []Action{Send{To: m.cfg.Aggregator, Msg: t.pending}})
	}
	return nil
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
	t.waiting, t.training, t.pending = false, false, nil
	return acts
}

func (m *Machine) onRoundStart(now int64, rs *wire.RoundStart) []Action {
	t := m.tr
	if rs.GetRound() <= t.round {
		m.c.Stale++ // a repeated or reordered announcement
		return nil
	}
	acts := t.endRound(nil)
	t.round, t.roundHash, t.deadlineMs = rs.GetRound(), slices.Clone(rs.GetModelHash()), rs.GetDeadlineMs()
	if !equalHash(t.modelHash, t.roundHash) {
		// Only the round's model is of use from now on: let go of an old one
		// (a simulation holds a thousand trainers).
		t.model, t.modelHash = nil, nil
	}
	t.selected = slices.Contains(rs.GetSelected(), m.cfg.ID)
	if !t.selected {
		return acts
	}
	if equalHash(t.modelHash, t.roundHash) {
		t.training = true
		return append(acts, Train{Round: t.round, ModelHash: t.modelHash, Model: t.model})
	}
	t.waiting, t.modelDelay = true, m.retryMs
	return append(acts, m.requestModel(now)...)
}

func (m *Machine) requestModel(now int64) []Action {
	t := m.tr
	return t.retry(now, TimerModelRetry, t.modelDelay,
		[]Action{Send{To: m.cfg.Aggregator, Msg: m.msg(&wire.ModelRequest{ModelHash: t.roundHash})}})
}

func (m *Machine) onModelResponse(resp *wire.ModelResponse) []Action {
	t := m.tr
	model := resp.GetModel()
	if len(model) > m.cfg.MaxModelBytes {
		m.c.BadModels++
		return nil
	}
	h := Hash(model)
	if !equalHash(h, resp.GetModelHash()) {
		m.c.BadModels++ // corrupted or forged: never train from it
		return nil
	}
	if !t.waiting || !equalHash(h, t.roundHash) {
		m.c.Stale++ // an answer to a resent request, or for an earlier round
		return nil
	}
	t.model, t.modelHash = model, h
	t.waiting, t.training = false, true
	return []Action{
		CancelTimer{ID: TimerID{TimerModelRetry, t.round}},
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
	t.pending = nil
	return []Action{CancelTimer{ID: TimerID{TimerUpdateRetry, t.round}}}
}

func (m *Machine) onRoundResult(rr *wire.RoundResult) []Action {
	t := m.tr
	var acts []Action
	if rr.GetRound() == t.round {
		acts = t.endRound(nil) // the round is closed: nothing we send counts any more
	}
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

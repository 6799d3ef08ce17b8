package node

import (
	"fmt"
	"slices"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/wire"
)

// aggregatorState is the aggregator's side of the protocol. A round is always
// open between Start and Done: closing one opens the next in the same Step.
type aggregatorState struct {
	agg aggregate.Aggregator

	round                 uint64
	model, hash           []byte // the open round's global model
	prevModel, prevHash   []byte // the model before it (still served to late trainers)
	selected              []PeerID
	isSelected            map[PeerID]bool
	acceptedPeers         []PeerID
	acceptedHash          map[PeerID][]byte // payload hash per accepted peer
	prevAccepted          map[PeerID][]byte // acceptedHash of the previous round
	updateHashes          [][]byte          // payload hashes in acceptance order
	rejected              []Rejection
	startedMs, deadlineMs int64
	start                 *wire.Envelope  // the round's RoundStart
	heard                 map[PeerID]bool // selected peers that asked for the model or sent an update
	announceDelay         int64           // next RoundStart resend delay, 0 when none is pending
}

func (m *Machine) stepAggregator(now int64, ev Event) []Action {
	a := m.agg
	switch ev := ev.(type) {
	case Start:
		if a.round > 0 || m.done {
			return nil
		}
		return m.openRound(now, 1, nil)
	case Recv:
		switch body := ev.Msg.GetBody().(type) {
		case *wire.Envelope_Update:
			return m.onUpdate(now, ev.From, ev.Msg.GetFederation(), body.Update)
		case *wire.Envelope_ModelRequest:
			return m.onModelRequest(ev.From, ev.Msg.GetFederation(), body.ModelRequest)
		default:
			m.c.Ignored++
		}
	case TimerFired:
		switch {
		case a.round == 0 || m.done || ev.ID.Round != a.round:
		case ev.ID.Kind == TimerDeadline:
			return m.closeRound(now, "deadline", nil)
		case ev.ID.Kind == TimerAnnounce && a.announceDelay > 0:
			return m.announce(now)
		}
		m.c.Stale++
	case TrainDone:
		m.c.Ignored++
	}
	return nil
}

// openRound begins round r, appending its actions to acts.
func (m *Machine) openRound(now int64, r uint64, acts []Action) []Action {
	a := m.agg
	if err := a.agg.Begin(r, a.model); err != nil {
		return m.fail(acts, fmt.Errorf("node: round %d: aggregator %s: Begin: %w", r, a.agg.Name(), err))
	}
	sel, err := m.selectPeers(r)
	if err != nil {
		return m.fail(acts, err)
	}
	a.round = r
	a.selected = sel
	a.isSelected = make(map[PeerID]bool, len(sel))
	for _, p := range sel {
		a.isSelected[p] = true
	}
	a.acceptedPeers, a.updateHashes, a.rejected = nil, nil, nil
	a.acceptedHash = make(map[PeerID][]byte, len(sel))
	a.startedMs, a.deadlineMs = now, now+m.cfg.RoundTimeoutMs
	a.heard = make(map[PeerID]bool, len(sel))
	a.start = m.msg(&wire.RoundStart{
		Round:      r,
		ModelHash:  a.hash,
		Selected:   slices.Clone(sel),
		DeadlineMs: a.deadlineMs,
	})
	acts = append(acts,
		Broadcast{Msg: a.start},
		SetTimer{ID: TimerID{TimerDeadline, r}, AtMs: a.deadlineMs},
	)
	a.announceDelay = 0
	if at := now + m.retryMs; at < a.deadlineMs {
		a.announceDelay = m.retryMs
		acts = append(acts, SetTimer{ID: TimerID{TimerAnnounce, r}, AtMs: at})
	}
	return acts
}

// announce resends the RoundStart to the selected peers that are silent: an
// announcement is a broadcast, and a lost one would keep a peer out of the round.
func (m *Machine) announce(now int64) []Action {
	a := m.agg
	var acts []Action
	for _, p := range a.selected {
		if !a.heard[p] {
			acts = append(acts, Send{To: p, Msg: a.start})
			m.c.Resends++
		}
	}
	a.announceDelay *= 2
	if at := now + a.announceDelay; at < a.deadlineMs && len(acts) > 0 {
		acts = append(acts, SetTimer{ID: TimerID{TimerAnnounce, a.round}, AtMs: at})
	} else {
		a.announceDelay = 0
	}
	return acts
}

func (m *Machine) selectPeers(r uint64) ([]PeerID, error) {
	f := m.cfg.Select
	if f == nil {
		f = SelectUniform
	}
	k := m.cfg.PerRound
	sel := f(r, slices.Clone(m.members), k, m.cfg.Seed)
	if len(sel) != k {
		return nil, fmt.Errorf("node: round %d: Config.Select returned %d peers, want PerRound = %d", r, len(sel), k)
	}
	seen := make(map[PeerID]bool, k)
	for _, p := range sel {
		if !m.member[p] || seen[p] {
			return nil, fmt.Errorf("node: round %d: Config.Select returned %q, not a distinct member", r, p)
		}
		seen[p] = true
	}
	return slices.Clone(sel), nil
}

// fail stops the aggregator on an error it cannot recover from.
func (m *Machine) fail(acts []Action, err error) []Action {
	m.done = true
	if a := m.agg; a.round > 0 {
		acts = append(acts, CancelTimer{ID: TimerID{TimerDeadline, a.round}})
		if a.announceDelay > 0 {
			acts = append(acts, CancelTimer{ID: TimerID{TimerAnnounce, a.round}})
		}
	}
	return append(acts, Done{Err: err})
}

func (m *Machine) onUpdate(now int64, from PeerID, fed string, u *wire.Update) []Action {
	a := m.agg
	if m.done {
		m.c.Ignored++ // the federation's run is over; nobody aggregates any more
		return nil
	}
	ack := func(accepted bool, reason Reason) []Action {
		return []Action{Send{To: from, Msg: m.msg(&wire.UpdateAck{Round: u.GetRound(), Accepted: accepted, Reason: string(reason)})}}
	}
	reject := func(reason Reason, detail string) []Action {
		a.rejected = append(a.rejected, Rejection{From: from, Round: u.GetRound(), Reason: reason, Detail: detail})
		return ack(false, reason)
	}
	switch {
	case fed != m.cfg.Federation:
		return reject(RejectWrongFederation, fmt.Sprintf("federation %q", fed))
	case !m.member[from]:
		return reject(RejectNotMember, "")
	case u.GetRound() == a.round-1 && len(u.GetPayload()) <= m.cfg.MaxUpdateBytes &&
		equalHash(a.prevAccepted[from], Hash(u.GetPayload())):
		// A resend of an update accepted in the round that just closed (our ack
		// was lost): acknowledge it again rather than count a rejection.
		m.c.Resends++
		return ack(true, "")
	case u.GetRound() != a.round:
		return reject(RejectWrongRound, fmt.Sprintf("update for round %d, round %d is open", u.GetRound(), a.round))
	case !a.isSelected[from]:
		return reject(RejectNotSelected, "")
	}
	a.heard[from] = true
	switch {
	case !equalHash(u.GetModelHash(), a.hash):
		return reject(RejectWrongModel, fmt.Sprintf("model %x", u.GetModelHash()))
	case len(u.GetPayload()) > m.cfg.MaxUpdateBytes:
		return reject(RejectOversized, fmt.Sprintf("%d bytes, limit %d", len(u.GetPayload()), m.cfg.MaxUpdateBytes))
	case u.GetSamples() <= 0:
		return reject(RejectBadSamples, fmt.Sprintf("samples %d", u.GetSamples()))
	}
	h := Hash(u.GetPayload())
	if prev, dup := a.acceptedHash[from]; dup {
		if equalHash(prev, h) {
			// The same update again: our ack was lost. Acknowledge, count once.
			m.c.Resends++
			return ack(true, "")
		}
		return reject(RejectDuplicate, "")
	}
	if err := a.agg.Add(aggregate.Update{Peer: from, Samples: u.GetSamples(), Payload: u.GetPayload()}); err != nil {
		return reject(RejectInvalidPayload, err.Error())
	}
	a.acceptedHash[from] = h
	a.acceptedPeers = append(a.acceptedPeers, from)
	a.updateHashes = append(a.updateHashes, h)
	acts := ack(true, "")
	if len(a.acceptedPeers) == m.cfg.Quorum {
		acts = m.closeRound(now, "quorum", acts)
	}
	return acts
}

// closeRound ends the open round (how: "quorum" or "deadline"), announces the
// result and opens the next round or reports Done.
func (m *Machine) closeRound(now int64, how string, acts []Action) []Action {
	a := m.agg
	r, n := a.round, len(a.acceptedPeers)
	rc := RoundClosed{
		Round:         r,
		Selected:      len(a.selected),
		Accepted:      n,
		SelectedPeers: a.selected,
		AcceptedPeers: a.acceptedPeers,
		Rejected:      a.rejected,
		StartedMs:     a.startedMs,
		ClosedMs:      now,
	}
	var used [][]byte
	if n >= m.cfg.MinUpdates {
		model, err := a.agg.Finalize()
		if err != nil {
			return m.fail(acts, fmt.Errorf("node: round %d: aggregator %s: Finalize: %w", r, a.agg.Name(), err))
		}
		a.prevModel, a.prevHash = a.model, a.hash
		a.model, a.hash = model, Hash(model)
		used = a.updateHashes
		rc.Advanced, rc.Reason = true, how
	} else {
		rc.Reason = fmt.Sprintf("%s with %d accepted updates, fewer than MinUpdates = %d: model unchanged", how, n, m.cfg.MinUpdates)
	}
	rc.Model, rc.ModelHash = a.model, a.hash
	a.prevAccepted = a.acceptedHash
	acts = append(acts, Broadcast{Msg: m.msg(&wire.RoundResult{
		Round:        r,
		ModelHash:    a.hash,
		UpdateHashes: used,
		Accepted:     uint32(n),
		Rejected:     uint32(len(a.rejected)),
	})})
	if now < a.deadlineMs {
		acts = append(acts, CancelTimer{ID: TimerID{TimerDeadline, r}})
	}
	if a.announceDelay > 0 {
		acts = append(acts, CancelTimer{ID: TimerID{TimerAnnounce, r}})
		a.announceDelay = 0
	}
	acts = append(acts, rc)
	if m.cfg.Rounds > 0 && r >= m.cfg.Rounds {
		m.done = true
		return append(acts, Done{})
	}
	return m.openRound(now, r+1, acts)
}

func (m *Machine) onModelRequest(from PeerID, fed string, req *wire.ModelRequest) []Action {
	a := m.agg
	if fed != m.cfg.Federation || !m.member[from] {
		m.c.Ignored++
		return nil
	}
	var model, hash []byte
	switch h := req.GetModelHash(); {
	case equalHash(h, a.hash):
		model, hash = a.model, a.hash
		if a.isSelected[from] && !m.done {
			a.heard[from] = true
		}
	case equalHash(h, a.prevHash):
		model, hash = a.prevModel, a.prevHash
	default:
		m.c.UnknownModels++
		return nil
	}
	return []Action{Send{To: from, Msg: m.msg(&wire.ModelResponse{ModelHash: hash, Model: model})}}
}
